"""Datasets for distnet: readers for MNIST-style IDX files, CIFAR-10 and image folders,
a deterministic synthetic set, verified downloads, and a registry tying them together.

The named datasets return a ``Dataset`` holding uint8 images (N, C, H, W) and int64 labels;
``Dataset.batch(indices)`` gives normalised float32 inputs.  Your own arrays go into an
``ArrayDataset`` (any real inputs; integer targets for classification, float ones for
regression), and ``.npz`` files into a pair of them with ``load_npz``.  Bad or missing files
raise ``distnet.errors.UserError`` (a ValueError) with a one-line message naming the file.
"""

from .arrays import ArrayDataset, load_npz
from .dataset import Dataset
from .idx import read_idx, write_idx
from .registry import list_datasets, load_dataset
from .synthetic import synthetic

__all__ = ["Dataset", "ArrayDataset", "load_npz", "load_dataset", "list_datasets", "synthetic",
           "read_idx", "write_idx"]
