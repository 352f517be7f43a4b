"""The public API in one import: ``from distnet.api import fit, evaluate, predict, History``.

The same objects as ``distnet.fit`` etc.  The runnable modules ``distnet/evaluate.py`` and
``distnet/predict.py`` forward their calls here (see ``cli/_callable_module.py``).
"""
from .data.arrays import ArrayDataset
from .evaluation import evaluate, predict
from .fitting import History, fit

__all__ = ["fit", "evaluate", "predict", "History", "ArrayDataset"]
