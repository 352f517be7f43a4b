"""Files a person hands to ``distnet predict`` turned into the model's input pixels.

Formats are recognised by their first bytes, not their names: PNG and JPEG (through Pillow,
restricted to those two decoders, with the size checked from the header before any pixel is
decoded, so a decompression bomb costs nothing), NumPy ``.npy`` (``allow_pickle=False``)
and IDX (MNIST's format, gzipped or not).

Images are converted to what the model was trained on and every step is reported:

* grayscale or RGB, as many channels as the model takes (transparency flattened onto white);
* inverted when the model's data is light-on-dark (MNIST: mean pixel 0.13) and the image is
  dark-on-light (its border is mostly light), like a scan or a drawing;
* an image of another size is resized; for 28x28 grayscale models it is fitted the way MNIST
  was made: the digit's bounding box scaled to fit 20x20 and placed in a 28x28 field with
  its centre of mass in the middle.  An image already of the model's size is left as it is.

Arrays (``.npy``, IDX) are taken as pixels already: uint8 0-255, or floats in [0, 1]; for a
model trained on arrays of the user's own (``ArrayDataset``, ``--dataset npz:``), whose inputs
are not pixels, they are taken as they are (``as_given``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data._util import oneline
from ..errors import UserError

MAX_PIXELS = 40_000_000  # larger than any photo a person means; a bomb is far larger
_PNG, _JPEG, _NPY = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"\x93NUMPY"


@dataclass
class Sample:
    """One model input from a file: uint8 pixels (C, H, W) and what was done to get them
    (or, from an array read ``as_given``, its values, with ``image`` False)."""
    file: str
    index: int | None  # position inside a file holding several samples, else None
    pixels: np.ndarray
    conversion: str
    image: bool = True


def sniff(path: Path) -> str:
    """'png', 'jpeg', 'npy' or 'idx' from the file's first bytes; UserError otherwise."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if head.startswith(_PNG):
        return "png"
    if head.startswith(_JPEG):
        return "jpeg"
    if head.startswith(_NPY):
        return "npy"
    if head[:2] == b"\x1f\x8b" or (len(head) >= 4 and head[:3] == b"\x00\x00\x08" and 1 <= head[3] <= 4):
        return "idx"
    if not head:
        raise UserError(f"{path}: empty file; expected a PNG or JPEG image, a .npy array or an IDX file")
    raise UserError(f"{path}: not an image: expected a PNG or JPEG image, a .npy array or an IDX file")


def read_samples(path, input_shape, dark_background: bool, as_given: bool = False) -> list[Sample]:
    """Every model input that ``path`` holds (one for an image, N for an array of N); with
    ``as_given`` an array's values are kept as they are instead of read as pixels."""
    path = Path(path)
    kind = sniff(path)
    if kind in ("png", "jpeg"):
        return [_from_image(path, kind, input_shape, dark_background)]
    if kind == "npy":
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as exc:  # includes "Object arrays cannot be loaded when allow_pickle=False"
            raise UserError(f"{path}: not a plain .npy array: {oneline(exc)}") from None
        except (OSError, EOFError) as exc:
            raise UserError(f"{path}: truncated or corrupt .npy file: {oneline(exc)}") from None
        if not isinstance(array, np.ndarray):
            raise UserError(f"{path}: not a single .npy array")
    else:
        from ..data.idx import read_idx
        array = read_idx(path)
    return _from_array(path, array, input_shape, kind, as_given)


# --- arrays --------------------------------------------------------------------------------
def _as_pixels(path: Path, array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise UserError(f"{path}: integer pixels must lie in 0..255")
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or (array.size and (array.min() < 0 or array.max() > 1)):
            raise UserError(f"{path}: float pixels must be finite and lie in [0, 1] (pixel/255)")
        return np.rint(array * 255).astype(np.uint8)
    raise UserError(f"{path}: array of {array.dtype} is not pixels (expected uint8 or float)")


def _from_array(path: Path, array: np.ndarray, input_shape, kind: str, as_given: bool = False) -> list[Sample]:
    shape = tuple(input_shape)
    c = shape[0]
    if array.dtype.kind not in "biuf":  # strings, dates, ...: not numbers, whatever their shape
        raise UserError(f"{path}: array of {array.dtype} is not numbers (expected uint8 or float pixels)")
    if array.shape == shape or (c == 1 and array.shape == shape[1:]):
        batch = array.reshape((1,) + shape)
    elif array.shape[1:] == shape or (c == 1 and array.ndim == 3 and array.shape[1:] == shape[1:]):
        batch = array.reshape((array.shape[0],) + shape)
    else:
        want = "x".join(map(str, shape))
        raise UserError(f"{path}: array of shape {'x'.join(map(str, array.shape))} does not fit the "
                        f"model's input {want} (or N x {want})")
    if not as_given:
        batch = _as_pixels(path, batch)
    elif not (np.issubdtype(batch.dtype, np.integer) or np.issubdtype(batch.dtype, np.floating)) \
            or (batch.dtype.kind == "f" and not np.all(np.isfinite(batch))):
        raise UserError(f"{path}: array of {batch.dtype} is not finite numbers")
    name = "IDX" if kind == "idx" else ".npy"
    several = len(batch) != 1 or array.ndim > len(shape) or (c == 1 and array.ndim == 3 and array.shape != shape)
    return [Sample(str(path), i if several else None, np.ascontiguousarray(batch[i]),
                   f"{name} array used as it is", image=False) for i in range(len(batch))]


# --- images --------------------------------------------------------------------------------
def _open_image(path: Path, kind: str):
    try:
        from PIL import Image
    except ImportError:
        raise UserError(f"{path}: reading images needs Pillow, which is not installed; "
                        f"run: pip install Pillow (or pip install 'distnet[images]')") from None
    try:
        with warnings.catch_warnings():  # the size is judged below, in one error line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path, formats=["PNG", "JPEG"])
    except Exception as exc:  # Pillow raises many types for garbage; all mean the same here
        raise UserError(f"{path}: cannot read {kind.upper()} image: {oneline(exc)}") from None
    width, height = im.size
    if width * height > MAX_PIXELS:
        im.close()
        raise UserError(f"{path}: image is {width}x{height}, more than {MAX_PIXELS // 1_000_000} "
                        f"megapixels; refusing to decode it")
    try:
        im.load()
    except Exception as exc:
        im.close()
        raise UserError(f"{path}: cannot decode {kind.upper()} image (truncated or corrupt): "
                        f"{oneline(exc)}") from None
    return im


def _flatten_alpha(im):
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), True
    return im, False


def _fit_like_mnist(gray: np.ndarray) -> tuple[np.ndarray, str]:
    """A light-on-dark digit of any size into 28x28 the way MNIST was made: bounding box
    scaled to fit 20x20 (aspect kept), then centred by its centre of mass."""
    from PIL import Image

    ink = gray > 0.25 * gray.max() if gray.max() > 0 else np.zeros_like(gray, bool)
    if not ink.any():
        small = np.asarray(Image.fromarray(gray).resize((28, 28), Image.BILINEAR))
        return small, "resized to 28x28 (no ink found)"
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    box = gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = box.shape
    scale = 20.0 / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    digit = np.asarray(Image.fromarray(box).resize((nw, nh), Image.LANCZOS), dtype=np.float64)
    digit = np.clip(digit, 0, 255)
    canvas = np.zeros((28, 28))
    total = digit.sum()
    cy = (digit.sum(axis=1) @ np.arange(nh)) / total if total else (nh - 1) / 2
    cx = (digit.sum(axis=0) @ np.arange(nw)) / total if total else (nw - 1) / 2
    top = int(np.clip(round(13.5 - cy), 0, 28 - nh))
    left = int(np.clip(round(13.5 - cx), 0, 28 - nw))
    canvas[top:top + nh, left:left + nw] = digit
    return np.rint(canvas).astype(np.uint8), f"digit {w}x{h} fitted into 20x20, centred by mass in 28x28"


def _from_image(path: Path, kind: str, input_shape, dark_background: bool) -> Sample:
    from PIL import Image

    with _open_image(path, kind) as im:
        steps = [f"{kind.upper()} {im.size[0]}x{im.size[1]} {im.mode}"]
        flat, had_alpha = _flatten_alpha(im)
        if had_alpha:
            steps.append("transparency flattened onto white")
        c, h, w = (int(d) for d in input_shape)
        target_mode = "L" if c == 1 else "RGB"
        if c not in (1, 3):
            raise UserError(f"{path}: the model takes {c}-channel input; images give 1 or 3 channels")
        if flat.mode != target_mode:
            steps.append("to grayscale" if c == 1 else "to RGB")
        pixels = np.asarray(flat.convert(target_mode), dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if c == 1 and dark_background:
        border = np.concatenate([pixels[0, :, 0], pixels[-1, :, 0], pixels[:, 0, 0], pixels[:, -1, 0]])
        if np.median(border) > 127:
            pixels = 255 - pixels
            steps.append("inverted (dark on light)")
    if pixels.shape[:2] != (h, w):
        if c == 1 and (h, w) == (28, 28) and dark_background:
            fitted, how = _fit_like_mnist(pixels[:, :, 0])
            pixels = fitted[:, :, None]
            steps.append(how)
        else:
            resized = Image.fromarray(pixels[:, :, 0] if c == 1 else pixels).resize((w, h), Image.LANCZOS)
            pixels = np.asarray(resized, dtype=np.uint8).reshape(h, w, c)
            steps.append(f"resized to {w}x{h}")
    if len(steps) == 1:
        steps.append("used as it is")
    return Sample(str(path), None, np.ascontiguousarray(pixels.transpose(2, 0, 1)), ", ".join(steps))
