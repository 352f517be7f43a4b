"""distnet: data-parallel training of convolutional networks written from scratch in NumPy."""
__version__ = "0.1.0"
