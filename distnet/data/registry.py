"""Named datasets: where their files live, where to download them, and how to load them.

``load_dataset(name, split, data_dir=None, download=True)`` for "mnist", "fashion-mnist",
"cifar10" and "synthetic".

Where files are looked for, first match wins:

* ``data_dir`` argument: the folder holding the dataset's files themselves
  (``DIR/train-images-idx3-ubyte.gz``); ``DIR/<dataset>/`` is accepted too and checked
  first, so one folder can hold several datasets in sub-folders. Downloads go to ``DIR``.
* else ``$DISTNET_DATA``: the same lookup; downloads go to ``$DISTNET_DATA/<dataset>/``
  (a shared root, and MNIST and Fashion-MNIST use the same file names).
* else, for ``mnist`` only, the four original files shipped inside the package
  (``distnet/data/embedded/``): MNIST works with no network and no setup.
* else the cache folder ``$XDG_CACHE_HOME/distnet/<dataset>/`` (``~/.cache/distnet/...``).

MNIST-style files may be gzipped or raw, and named ``train-images-idx3-ubyte[.gz]`` or
``train-images.idx3-ubyte[.gz]``. Local files are validated by structure, not checksum, so
re-compressed or un-gzipped copies work; downloads are checked against the SHA-256s below.

Checksums (each kept with the file's size, past which a download is cut off):

* MNIST: the SHA-256s of LeCun's original .gz files (see shared/data/SOURCES.md, where
  they were matched against the published MD5s).
* Fashion-MNIST: SHA-256s of the official .gz files as published alongside the official
  MD5s by several independent projects (among them torchvision); the MD5s are also kept.
  The Debian package ``dataset-fashion-mnist`` re-compresses the files (its .gz bytes and
  MD5s differ from the official ones), so its copies load fine but would not pass a
  download check.
* CIFAR-10: SHA-256 of the official ``cifar-10-binary.tar.gz`` (170,052,171 bytes),
  published by several independent projects next to the official MD5
  c32a1d4ab5d03f1284b67883e8d87530, which is also kept. The binary version is the one
  downloaded because it needs no unpickling; the python version (MD5
  c58f30108f718f92721af3b95e74349a, SHA-256 6d958be0...5c001ce) is read if present.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distnet.errors import UserError

from . import cache as decoded_cache
from . import cifar
from ._util import default_cache_dir
from .dataset import Dataset
from .download import DownloadError, fetch
from .idx import read_idx_pair
from .imagefolder import image_folder_dataset
from .synthetic import synthetic

SPLITS = ("train", "test")


@dataclass(frozen=True)
class RemoteFile:
    name: str
    sha256: str
    md5: str = ""
    size: int | None = None  # bytes; a download is cut off as soon as it passes this


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    kind: str  # "idx", "cifar" or "synthetic"
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mirrors: tuple[str, ...] = ()  # base URLs, each ending in "/"
    files: tuple[RemoteFile, ...] = ()
    aliases: tuple[str, ...] = field(default=())

    def remote(self, filename: str) -> RemoteFile:
        return next(f for f in self.files if f.name == filename)


_SPECS = (
    DatasetSpec(
        name="mnist",
        kind="idx",
        classes=tuple(str(d) for d in range(10)),
        mean=(0.1307,),
        std=(0.3081,),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", "f68b3c2dcbeaaa9fbdd348bbdeb94873", size=9912422),
            RemoteFile("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", "d53e105ee54ea40749a09fcbcd1e9432", size=28881),
            RemoteFile("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", "9fb629c4189551a2d022fa330f9573f3", size=1648877),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", "ec29112dd5afa0611ce80d1b7f02629c", size=4542),
        ),
    ),
    DatasetSpec(
        name="fashion-mnist",
        kind="idx",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        mean=(0.2860,),
        std=(0.3530,),
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", size=26421880),
            RemoteFile("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", "25c81989df183df01b3e8a0aad5dffbe", size=29515),
            RemoteFile("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", "bef4ecab320f06d8554ea6380940ec79", size=4422102),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", "bb300cfdad3c16e7a12a480ee83cd310", size=5148),
        ),
        aliases=("fashion_mnist", "fashionmnist"),
    ),
    DatasetSpec(
        name="cifar10",
        kind="cifar",
        classes=cifar.CLASSES,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        files=(
            RemoteFile(cifar.BIN_TARBALL, "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd", "c32a1d4ab5d03f1284b67883e8d87530", size=170052171),
        ),
        aliases=("cifar-10", "cifar_10"),
    ),
    DatasetSpec(
        name="synthetic",
        kind="synthetic",
        classes=tuple(f"class{i}" for i in range(10)),
        mean=(0.5,),
        std=(0.23,),
    ),
)
_BY_NAME = {alias: spec for spec in _SPECS for alias in (spec.name, *spec.aliases)}


def list_datasets() -> tuple[str, ...]:
    """Names ``load_dataset`` accepts (aliases such as "cifar-10" work too)."""
    return tuple(spec.name for spec in _SPECS)


def get_spec(name: str) -> DatasetSpec:
    try:
        return _BY_NAME[name.lower()]
    except (KeyError, AttributeError):
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(list_datasets())}") from None


def embedded_dir() -> Path:
    """Folder of the MNIST files shipped in the package."""
    return Path(str(importlib.resources.files("distnet.data").joinpath("embedded")))


# --------------------------------------------------------------------------- locating files


@dataclass(frozen=True)
class _Where:
    bases: tuple[Path, ...]  # folders searched, in order
    target: Path | None  # where downloads go (None: never download)


def _where(spec: DatasetSpec, data_dir) -> _Where:
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        return _Where((d / spec.name, d), d)
    env = os.environ.get("DISTNET_DATA")
    if env:
        d = Path(env).expanduser()
        return _Where((d / spec.name, d), d / spec.name)
    if spec.name == "mnist":
        return _Where((embedded_dir(),), None)
    d = default_cache_dir() / spec.name
    return _Where((d,), d)


def _idx_stems(split: str) -> tuple[str, str]:
    prefix = "train" if split == "train" else "t10k"
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _idx_candidates(folder: Path, stem: str) -> list[Path]:
    """Accepted spellings: gzipped or raw, '-idx' or '.idx' (as some mirrors name them)."""
    dotted = stem.replace("-idx", ".idx")
    return [folder / n for n in (stem + ".gz", stem, dotted, dotted + ".gz")]


def _find_idx(folder: Path, stem: str) -> Path | None:
    return next((p for p in _idx_candidates(folder, stem) if p.is_file()), None)


def _describe_bases(where: _Where) -> str:
    return " or ".join(str(b) for b in where.bases)


def _missing(spec: DatasetSpec, filename: str, where: _Where, why: str) -> UserError:
    alternatives = ""
    if spec.kind == "cifar":
        alternatives = f" (nor {cifar.PY_TARBALL}, {cifar.BIN_FOLDER}/, {cifar.PY_FOLDER}/ or a train/<class>/ image folder)"
    return UserError(
        f"{spec.name}: {filename} not found in {_describe_bases(where)}{alternatives} and {why};"
        f" put the files there or pass --data-dir"
    )


def _obtain(spec: DatasetSpec, filename: str, where: _Where, download: bool) -> Path:
    """Download ``filename`` into the target folder, or explain why it cannot be had."""
    if where.target is None:
        raise _missing(spec, filename, where, "this location is never downloaded into")
    if not download:
        raise _missing(spec, filename, where, "downloading is turned off")
    remote = spec.remote(filename)
    try:
        return fetch([m + filename for m in spec.mirrors], where.target / filename, remote.sha256,
                     size=remote.size)
    except DownloadError as exc:
        raise _missing(spec, filename, where, f"download failed ({exc.reason})") from None


def _locate_idx(spec: DatasetSpec, split: str, where: _Where, download: bool) -> tuple[Path, Path]:
    stems = _idx_stems(split)
    # Use one folder for both files: the first that holds any file of the dataset.
    all_stems = _idx_stems("train") + _idx_stems("test")
    folder = next((b for b in where.bases if any(_find_idx(b, s) for s in all_stems)), None)
    found = []
    for stem in stems:
        path = _find_idx(folder, stem) if folder is not None else None
        if path is None:
            if folder is not None and where.target is not None and folder != where.target:
                where = _Where(where.bases, folder)  # complete the folder the user already filled
            path = _obtain(spec, stem + ".gz", where, download)
        found.append(path)
    return found[0], found[1]


def _find_image_folder(base: Path) -> Path | None:
    """An extracted ``root/{train,test}/<class>/`` copy (e.g. the JPEG CIFAR-10)."""
    for root in (base, base / "cifar10_jpeg_q75"):
        if (root / "train" / cifar.CLASSES[0]).is_dir() or (root / "test" / cifar.CLASSES[0]).is_dir():
            return root
    return None


def _locate_cifar(spec: DatasetSpec, where: _Where, download: bool) -> tuple[str, Path]:
    for base in where.bases:
        if cifar.find_cifar10(base) is not None:
            return "cifar", base
        folder = _find_image_folder(base)
        if folder is not None:
            return "imagefolder", folder
    path = _obtain(spec, cifar.BIN_TARBALL, where, download)
    return "cifar", path.parent


# --------------------------------------------------------------------------- loading


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def _identity(path: Path) -> list:
    """Size and mtime of a source file, or of each file directly inside a source folder
    (CIFAR-10's batch files: a file rewritten in place leaves the folder's mtime alone)."""
    if path.is_dir():
        return [[p.name, *_stamp(p)[1:]] for p in sorted(path.iterdir()) if p.is_file()]
    return list(_stamp(path)[1:])


def _decode(spec: DatasetSpec, split: str, kind: str, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, C, H, W) images and int64 labels decoded from the source files."""
    if kind == "idx":
        images, labels = read_idx_pair(paths[0], paths[1])
        bad = np.flatnonzero(labels >= len(spec.classes))
        if bad.size:
            raise UserError(
                f"{paths[1]}: label {int(labels[bad[0]])} at index {int(bad[0])} is out of range"
                f" for {spec.name}'s {len(spec.classes)} classes"
            )
        return images.reshape(images.shape[0], 1, *images.shape[1:]), labels.astype(np.int64)
    return cifar.load_cifar10(paths[0], split)


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, split: str, kind: str, stamps: tuple) -> Dataset:
    """Load once per process; ``stamps`` (path, size, mtime) make a changed file a new key.

    The decoded arrays come memory-mapped from the machine's shared decoded cache
    (``cache.decoded``), so the ranks of one machine hold one copy between them."""
    spec = get_spec(name)
    paths = [Path(s[0]) for s in stamps]
    if kind == "imagefolder":  # it keeps its own entries, keyed by every image file
        ds = image_folder_dataset(paths[0], split, name=spec.name, mean=spec.mean, std=spec.std)
        if ds.classes != spec.classes or ds.input_shape != (3, 32, 32):
            raise UserError(
                f"{paths[0]}: image folder has classes {list(ds.classes)} of shape {ds.input_shape},"
                f" expected CIFAR-10's {list(spec.classes)} of shape (3, 32, 32)"
            )
        images, labels = ds.images, ds.labels
    else:
        sources = list(dict.fromkeys(str(p.resolve()) for p in paths))
        images, labels = decoded_cache.decoded(
            f"{spec.name}-{split}", [kind, sources], lambda: _decode(spec, split, kind, paths),
            identity=[_identity(Path(p)) for p in sources])
    images.flags.writeable = False
    labels.flags.writeable = False
    return Dataset(name=spec.name, images=images, labels=labels, classes=spec.classes, mean=spec.mean, std=spec.std)


def load_dataset(name: str, split: str, data_dir=None, download: bool = True) -> Dataset:
    """Load split "train" or "test" of dataset ``name`` (see the module docstring for where).

    Raises UserError, with one line saying which file is missing or wrong and where it was
    looked for, whenever the data cannot be had. Results are cached in-process and their
    arrays are read-only.
    """
    spec = get_spec(name)
    if split not in SPLITS:
        raise UserError(f"{spec.name}: unknown split {split!r}; expected 'train' or 'test'")
    if spec.kind == "synthetic":
        return synthetic(split)
    where = _where(spec, data_dir)
    if spec.kind == "idx":
        images_path, labels_path = _locate_idx(spec, split, where, download)
        return _load_cached(spec.name, split, "idx", (_stamp(images_path), _stamp(labels_path)))
    kind, path = _locate_cifar(spec, where, download)
    found = cifar.find_cifar10(path) if kind == "cifar" else None
    return _load_cached(spec.name, split, kind, (_stamp(path), _stamp(found[1]) if found else _stamp(path)))
