"""distnet.nn: layers with hand-written forward and backward passes, losses, initialisers,
and named models.  Knows nothing of MPI, files or the command line: global-batch
statistics come through an injected reducer (``set_stat_reducer``) and per-sample
randomness through a sample context (``set_sample_context``)."""
from .activations import ReLU, Sigmoid, Tanh
from .layers import AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d, Scale
from .losses import CrossEntropyLoss, MSELoss
from .models import MODELS, build_model
from .module import Module, Parameter, Sequential
from .normalization import BatchNorm1d, BatchNorm2d, set_stat_reducer
from .randomness import set_sample_context
from .residual import Residual
from .whitening import PatchWhitening, initialise_from_data

__all__ = [
    "Module", "Parameter", "Sequential", "Residual", "Linear", "Conv2d", "MaxPool2d",
    "AvgPool2d", "Flatten", "Dropout", "Scale", "BatchNorm1d", "BatchNorm2d", "ReLU", "Sigmoid", "Tanh",
    "CrossEntropyLoss", "MSELoss", "MODELS", "build_model", "set_stat_reducer",
    "set_sample_context", "PatchWhitening", "initialise_from_data",
]
