"""distnet.nn: layers with hand-written forward and backward passes, losses, initialisers,
and named models.  Knows nothing of MPI, files or the command line."""
from .activations import ReLU, Sigmoid, Tanh
from .layers import AvgPool2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d
from .losses import CrossEntropyLoss, MSELoss
from .models import MODELS, build_model
from .module import Module, Parameter, Sequential

__all__ = [
    "Module", "Parameter", "Sequential", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d",
    "Flatten", "Dropout", "ReLU", "Sigmoid", "Tanh", "CrossEntropyLoss", "MSELoss",
    "MODELS", "build_model",
]
