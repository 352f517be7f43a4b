"""Datasets stored as image files: ``root/{train,test}/<class>/*.png|jpg``.

Class names are the sub-folder names, sorted, taken from train and test together so the
two splits number classes the same way (for CIFAR-10 the sorted names are exactly the
official label order). Files within a class are read in name order.

Decoding tens of thousands of small JPEGs takes far longer than a training epoch on
MNIST-sized nets, so the decoded arrays go into the shared decoded cache (``cache.py``:
.npy files, memory-mapped by every process of the machine, written atomically, never
pickled), keyed by a fingerprint of every file's relative name, size and mtime: touching,
adding or removing an image gives a new key and a fresh decode.

Pillow is needed only here, and only when there is no valid cache yet.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from distnet.errors import UserError

from . import cache as decoded_cache
from ._util import oneline
from .dataset import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGE_FORMATS = ["PNG", "JPEG"]  # the only decoders Pillow may pick, whatever a file's content
MAX_IMAGE_SIDE = 4096  # 4096x4096 RGB is 48 MiB decoded; a 257 KB PNG can declare 9400x9400 (2.2 GB)
SPLITS = ("train", "test")
_CACHE_VERSION = b"distnet-imagefolder-v1"


def _class_names(root: Path) -> tuple[str, ...]:
    names: set[str] = set()
    for split in SPLITS:
        folder = root / split
        if folder.is_dir():
            names.update(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return tuple(sorted(names))


class _File(NamedTuple):
    path: str
    label: int
    size: int
    mtime_ns: int


def _list_files(root: Path, split: str, classes: tuple[str, ...]) -> list[_File]:
    """Every image of ``split``, in class then name order, with the stat the cache key needs.

    os.scandir rather than pathlib: a 50000-file CIFAR folder is listed in a fraction of
    the time, which matters because this runs on every load, cached or not.
    """
    files = []
    for label, name in enumerate(classes):
        folder = os.path.join(root, split, name)
        if not os.path.isdir(folder):
            continue
        with os.scandir(folder) as it:
            entries = sorted(
                (e for e in it if e.name.lower().endswith(IMAGE_SUFFIXES) and not e.name.startswith(".")),
                key=lambda e: e.name,
            )
        for e in entries:
            if e.is_file():
                st = e.stat()
                files.append(_File(e.path, label, st.st_size, st.st_mtime_ns))
    return files


def _fingerprint(root: Path, files: list[_File], classes: tuple[str, ...]) -> str:
    h = hashlib.sha256(_CACHE_VERSION)
    h.update("\0".join(classes).encode())
    skip = len(str(root)) + 1
    for f in files:
        h.update(f"\n{f.path[skip:]}\0{f.label}\0{f.size}\0{f.mtime_ns}".encode())
    return h.hexdigest()[:24]


def _decode(files: list[_File]) -> np.ndarray:
    """Decode every file to one uint8 (N, C, H, W) array; all must share one size."""
    try:
        from PIL import Image
    except ImportError:
        raise UserError(
            "reading image folders needs Pillow, which is not installed; run: pip install Pillow"
            " (or pip install 'distnet[images]')"
        ) from None
    images = None
    mode = None
    for i, f in enumerate(files):
        path = f.path
        try:
            # formats=: Pillow otherwise picks a decoder by content, and an EPS named a.png
            # would go to Ghostscript (which runs PostScript). Only the two this reads.
            with Image.open(path, formats=IMAGE_FORMATS) as im:
                width, height = im.size  # from the header: nothing is decoded yet
                if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
                    raise UserError(f"{path}: image is {width}x{height}, outside the 1 to {MAX_IMAGE_SIDE}"
                                    f" pixels per side this reader decodes")
                if images is not None and (height, width) != images.shape[2:]:
                    raise UserError(
                        f"{path}: image is {width}x{height} but {first} and the others before it are"
                        f" {images.shape[3]}x{images.shape[2]}; all images must share one size"
                    )
                if mode is None:
                    # The first image decides: grayscale stays 1 channel, anything else is RGB.
                    mode = "L" if im.mode in ("1", "L", "I;16", "I", "F") else "RGB"
                    first = path
                arr = np.asarray(im.convert(mode), dtype=np.uint8)
        except UserError:
            raise
        except Image.UnidentifiedImageError:
            raise UserError(f"{path}: cannot decode image: not a PNG or JPEG file (whatever its name says)") from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise UserError(f"{path}: cannot decode image: {oneline(exc)}") from None
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.shape[:2] != (height, width):
            raise UserError(f"{path}: cannot decode image: decoded {arr.shape[1]}x{arr.shape[0]},"
                            f" header said {width}x{height}")
        if images is None:
            images = np.empty((len(files), arr.shape[2], arr.shape[0], arr.shape[1]), dtype=np.uint8)
        images[i] = arr.transpose(2, 0, 1)
    assert images is not None
    return images


def load_image_folder(root, split: str, cache_dir=None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read ``root/<split>/<class>/*`` into uint8 images (N, C, H, W), int64 labels, class names.

    ``cache_dir``: the folder of decoded caches (``cache.decoded``: memory-mapped, shared by
    the processes of a machine); None means ``<distnet cache>/decoded``, False no cache.
    """
    root = Path(root)
    if split not in SPLITS:
        raise UserError(f"{root}: unknown split {split!r}; expected 'train' or 'test'")
    if not (root / split).is_dir():
        raise UserError(f"{root}: no {split}/ folder; expected {root}/{split}/<class>/<image files>")
    classes = _class_names(root)
    files = _list_files(root, split, classes)
    if not files:
        raise UserError(f"{root / split}: no .png or .jpg images in any <class>/ sub-folder")
    labels = np.fromiter((f.label for f in files), dtype=np.int64, count=len(files))

    images, labels = decoded_cache.decoded(  # cache_dir=False: decoded() only decodes
        f"{root.name or 'root'}-{split}", ["imagefolder", str(root.resolve()), split],
        lambda: (_decode(files), labels), cache_dir=cache_dir,
        identity=None if cache_dir is False else _fingerprint(root, files, classes))
    return images, labels, classes


def _channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units, from a 256-bin histogram (no float copy)."""
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = np.bincount(images[:, c].ravel(), minlength=256).astype(np.float64)
        p = hist / hist.sum()
        mu = float(p @ values)
        means.append(mu)
        stds.append(max(float(np.sqrt(p @ (values - mu) ** 2)), 1e-6))
    return tuple(means), tuple(stds)


def image_folder_dataset(root, split: str, name: str | None = None, mean=None, std=None, cache_dir=None) -> Dataset:
    """A Dataset from an image folder.

    Without ``mean``/``std`` they are measured on the *train* split (so the test split is
    normalised with train statistics, as it must be), which loads train through the cache.
    """
    images, labels, classes = load_image_folder(root, split, cache_dir=cache_dir)
    if mean is None or std is None:
        train = images if split == "train" else load_image_folder(root, "train", cache_dir=cache_dir)[0]
        m, s = _channel_stats(train)
        mean = m if mean is None else mean
        std = s if std is None else std
    return Dataset(
        name=name or Path(root).name,
        images=images,
        labels=labels,
        classes=classes,
        mean=tuple(mean),
        std=tuple(std),
    )
