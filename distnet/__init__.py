"""distnet: data-parallel training of convolutional networks written from scratch in NumPy.

The library in four names: ``distnet.fit(model, data, loss=..., optimizer=...)`` trains on one
process or under ``mpirun -n N``; ``distnet.evaluate`` and ``distnet.predict`` use the result;
``distnet.data.ArrayDataset`` wraps your arrays.  Layers are in ``distnet.nn``, optimizers in
``distnet.optim``, and ``distnet.distributed`` has the pieces of a hand-written loop.

Attributes load on first use (PEP 562), so ``import distnet`` loads nothing heavy: the
command line must set the BLAS thread count before NumPy is first imported.  The functions
live in modules of other names (``fitting``, ``evaluation``): a submodule named ``fit``
would replace the function ``distnet.fit`` by itself once imported.
"""
import importlib

__version__ = "0.1.0"

_FUNCTIONS = {"fit": "fitting", "History": "fitting", "evaluate": "evaluation", "predict": "evaluation"}
_SUBPACKAGES = ("data", "nn", "optim", "distributed", "errors")

__all__ = ["fit", "evaluate", "predict", "History", *_SUBPACKAGES, "__version__"]


def __getattr__(name):
    if name in _FUNCTIONS:
        value = getattr(importlib.import_module(f".{_FUNCTIONS[name]}", __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'distnet' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
