"""Datasets for distnet: readers for MNIST-style IDX files, CIFAR-10 and image folders,
a deterministic synthetic set, verified downloads, and a registry tying them together.

Everything returns a ``Dataset`` holding uint8 images (N, C, H, W) and int64 labels;
``Dataset.batch(indices)`` gives normalised float32 inputs. Bad or missing files raise
``distnet.errors.UserError`` with a one-line message naming the file.
"""

from .dataset import Dataset
from .idx import read_idx, write_idx
from .registry import list_datasets, load_dataset
from .synthetic import synthetic

__all__ = ["Dataset", "load_dataset", "list_datasets", "synthetic", "read_idx", "write_idx"]
