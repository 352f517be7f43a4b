"""``python -m distnet.predict CHECKPOINT FILE...``: classify images or arrays with a trained model.

Each file is converted to the model's input as ``distnet/cli/inputs.py`` describes, and the
command says what it did per file.  It prints the top-k classes with their probabilities;
``--json`` prints a list with one object per file (per sample, for a file holding several),
in the order given.  Every file is read and checked before anything is printed, so bad input
is one error line and exit code 2, never half a listing.
"""
from __future__ import annotations

import json
import sys

from ..errors import UserError
from ._common import Parser, one_blas_thread, report_user_error


def build_parser() -> Parser:
    p = Parser(prog="distnet predict", description="Classify PNG/JPEG images, .npy arrays or IDX files "
               "with a trained checkpoint.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file")
    p.add_argument("files", metavar="FILE", nargs="+", help="PNG or JPEG images, .npy arrays, IDX files")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="classes shown per file (default 3)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per file")
    p.add_argument("--batch-size", type=int, default=1000, help="samples per forward pass (default 1000)")
    return p


def softmax(logits):
    import numpy as np

    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted.astype(np.float64))
    return e / e.sum(axis=1, keepdims=True)


def pixel_scale(meta):
    """The factor that turns 0..255 pixels into the units of the model's raw inputs, or None
    when those inputs are not images.  1/255 for image datasets; for a model trained on
    arrays as given, 1/255 when those arrays lay in [0, 1], 1 when they lay in [0, 255]
    (uint8 images, say)."""
    if meta.get("inputs", "pixels/255") == "pixels/255":
        return 1.0 / 255.0
    low, high = meta.get("input_range") or (None, None)
    if low is None or low < 0 or high > 255:
        return None
    return 1.0 / 255.0 if high <= 1 else 1.0


def normalise(samples, meta, scale):
    """Samples (C, H, W) -> the float32 (N, C, H, W) input the model was trained on: images
    times ``scale`` (``pixel_scale``), arrays read as given left as they are, then
    ``(x - mean) / std`` with the training data's mean and std (none: left as it is)."""
    import numpy as np

    shape = tuple(meta["input_shape"])
    x = np.zeros((len(samples), *shape), np.float32)
    for i, sample in enumerate(samples):
        x[i] = sample.pixels
        if sample.image:
            x[i] *= np.float32(scale)
    c = shape[0]
    if meta.get("mean") is not None:
        x -= np.asarray(meta["mean"], np.float32).reshape(1, c, 1, 1)
    if meta.get("std") is not None:
        x /= np.asarray(meta["std"], np.float32).reshape(1, c, 1, 1)
    return x


def predict_files(checkpoint, files, top_k: int = 3, batch_size: int = 1000) -> list[dict]:
    """One result dict per sample, in file order: file, class, probability, top, conversion."""
    import numpy as np

    from ..meta import load_trained
    from .inputs import read_samples

    model, meta = load_trained(checkpoint)
    if meta.get("task", "classification") != "classification":
        raise UserError(f"{checkpoint}: a {meta['task']} checkpoint; predict classifies")
    shape = meta["input_shape"]
    if len(shape) != 3:
        raise UserError(f"{checkpoint}: the model takes {len(shape)}-d input, not images")
    as_given = meta.get("inputs", "pixels/255") != "pixels/255"
    scale = pixel_scale(meta)
    # light-on-dark training data (MNIST, Fashion-MNIST: mean pixel 0.13 of full scale) means
    # dark-on-light inputs get inverted
    mean = meta.get("mean")
    dark_background = (scale is not None and mean is not None and len(mean) == 1
                       and mean[0] / (255.0 * scale) < 0.5)
    samples = [s for f in files for s in read_samples(f, shape, dark_background, as_given)]
    image = next((s for s in samples if s.image), None)
    if image is not None and scale is None:
        low, high = meta.get("input_range") or (None, None)
        trained = "arrays of unknown range" if low is None else f"arrays in [{low:g}, {high:g}]"
        raise UserError(f"{image.file}: the model was trained on {trained}, not images; give it .npy arrays")
    classes = meta.get("classes") or list(range(meta["num_outputs"]))
    k = max(1, min(top_k, len(classes)))
    probs = np.concatenate([softmax(model(normalise(samples[lo:lo + batch_size], meta, scale)))
                            for lo in range(0, len(samples), batch_size)] or [np.zeros((0, len(classes)))])
    results = []
    for sample, p in zip(samples, probs):
        order = np.argsort(-p, kind="stable")[:k]
        top = [{"class": classes[i], "probability": float(p[i])} for i in order]
        entry = {"file": sample.file}
        if sample.index is not None:
            entry["index"] = sample.index
        entry.update({"class": top[0]["class"], "probability": top[0]["probability"], "top": top,
                      "conversion": sample.conversion})
        results.append(entry)
    return results


def format_text(results: list[dict]) -> str:
    lines = []
    for r in results:
        name = r["file"] + (f"[{r['index']}]" if "index" in r else "")
        others = ", ".join(f"{t['class']} {t['probability'] * 100:.2f}%" for t in r["top"][1:])
        lines.append(f"{name}: {r['class']} ({r['probability'] * 100:.2f}%)" + (f"; then {others}" if others else ""))
        lines.append(f"    {r['conversion']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    one_blas_thread()
    args = build_parser().parse_args(argv)
    try:
        if args.top_k < 1:
            raise UserError(f"--top-k: must be >= 1, got {args.top_k}")
        if args.batch_size < 1:
            raise UserError(f"--batch-size: must be >= 1, got {args.batch_size}")
        results = predict_files(args.checkpoint, args.files, args.top_k, args.batch_size)
    except UserError as exc:
        return report_user_error(exc)
    print(json.dumps(results) if args.json else format_text(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
