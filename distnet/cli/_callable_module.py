"""Make a module object callable, forwarding to an API function of the same name.

Why: ``distnet.evaluate`` and ``distnet.predict`` are API functions (contract C) and also
the names of runnable modules (``python -m distnet.evaluate``).  Importing the submodule
``distnet.evaluate`` rebinds the package attribute ``distnet.evaluate`` to the module; making
that module callable keeps ``distnet.evaluate(model, data, loss=...)`` working either way.
"""
from __future__ import annotations

import importlib
import sys
import types


def make_callable(module_name: str, api_module: str, function: str) -> None:
    """Turn the module ``module_name`` into one whose call runs ``api_module.function``."""

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            try:
                target = getattr(importlib.import_module(api_module), function)
            except (ImportError, AttributeError):
                raise NotImplementedError(
                    f"{module_name}(...) forwards to {api_module}.{function}, which this build of "
                    f"distnet does not have") from None
            return target(*args, **kwargs)

    CallableModule.__name__ = f"{function}_module"
    CallableModule.__doc__ = f"The module {module_name}, callable as {api_module}.{function}."
    sys.modules[module_name].__class__ = CallableModule
