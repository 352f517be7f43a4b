"""``python -m distnet.evaluate CHECKPOINT``: score a trained model on a dataset split.

Reports accuracy, loss, per-class accuracy and the confusion matrix (rows: true class).
Under ``mpirun`` every rank scores a contiguous shard of the split and the confusion counts
and loss sums are reduced, so the figures are exact and equal to a single process's.
Rank 0 reads the checkpoint and shares it (it may be the only rank that sees the checkpoint
volume, as in training); rank 0 alone prints and draws.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UserError
from ._common import Parser, one_blas_thread, report_user_error, require_matplotlib, write_atomically


def build_parser() -> Parser:
    p = Parser(prog="distnet evaluate", description="Score a checkpoint on a dataset split: accuracy, "
               "loss, per-class accuracy, confusion matrix. Runs sharded under mpirun.")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint file (e.g. runs/NAME/checkpoints/latest.npz)")
    p.add_argument("--dataset", help="dataset to score on (default: the one the checkpoint was trained on)")
    p.add_argument("--data-dir", metavar="DIR", help="where the dataset's files are (default: as in training)")
    p.add_argument("--split", choices=("train", "test"), default="test", help="(default test)")
    p.add_argument("--batch-size", type=int, default=1000, help="samples per forward pass (default 1000)")
    p.add_argument("--tta-flip", action="store_true",
                   help="score the mean of the logits of each image and its mirror image (as training's --tta-flip)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the confusion matrix (needs matplotlib)")
    p.add_argument("--no-download", dest="download", action="store_false", help="never try to download data")
    return p


# --- the numbers ---------------------------------------------------------------------------
def confusion_and_loss(model, data, start: int, stop: int, batch_size: int, tta_flip: bool = False):
    """(confusion counts K x K, summed cross-entropy) over samples [start, stop) of ``data``;
    with ``tta_flip``, of the logits averaged over each image and its mirror image."""
    import numpy as np

    from ..data.augment import flip_averaged_logits
    from ..nn import CrossEntropyLoss

    k = data.num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    loss_sum = 0.0
    criterion = CrossEntropyLoss()
    for lo in range(start, stop, batch_size):
        x, y = data.batch(np.arange(lo, min(lo + batch_size, stop)))
        logits = flip_averaged_logits(model, x) if tta_flip else model(x)
        loss_sum += criterion(logits, y) * len(y)
        confusion += np.bincount(y * k + logits.argmax(axis=1), minlength=k * k).reshape(k, k)
    return confusion, loss_sum


def summarize(confusion, loss_sum: float) -> dict:
    total = int(confusion.sum())
    per_class = [float(confusion[i, i] / row) if row else None
                 for i, row in enumerate(confusion.sum(axis=1).tolist())]
    return {"accuracy": float(confusion.trace() / total) if total else 0.0,
            "loss": float(loss_sum / total) if total else 0.0,
            "samples": total, "per_class_accuracy": per_class,
            "confusion": confusion.tolist()}


# --- text and picture ----------------------------------------------------------------------
def format_text(result: dict) -> str:
    classes, confusion = result["classes"], result["confusion"]
    k = len(classes)
    lines = [f"{result['checkpoint']}: {result['model']} on {result['dataset']} {result['split']} "
             f"({result['samples']} samples)",
             f"accuracy {result['accuracy'] * 100:.2f}%  loss {result['loss']:.4f}", "",
             "per-class accuracy:"]
    # class names beside the numbers, unless the names are the numbers (MNIST)
    named = classes != [str(i) for i in range(k)]
    labels = [f"{i:>2} {name:<{max(map(len, classes))}}" if named else f"{i:>2}" for i, name in enumerate(classes)]
    for i, acc in enumerate(result["per_class_accuracy"]):
        shown = f"{acc * 100:6.2f}%" if acc is not None else "      -"
        lines.append(f"  {labels[i]}  {shown}  of {sum(confusion[i])}")
    cell = max(4, len(str(max(max(row) for row in confusion))) + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted class):",
              " " * (2 + len(labels[0])) + "".join(f"{j:>{cell}}" for j in range(k))]
    for i, row in enumerate(confusion):
        lines.append(f"  {labels[i]}" + "".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)


def draw_confusion(result: dict, path: str, plt) -> None:
    import numpy as np

    confusion = np.asarray(result["confusion"], dtype=np.float64)
    classes = result["classes"]
    k = len(classes)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.55 * k), dpi=110)
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if confusion[i, j]:
                ax.text(j, i, f"{int(confusion[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right"
                  if max(map(len, classes)) > 2 else "center")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{result['model']} on {result['dataset']} {result['split']}: "
                 f"{result['accuracy'] * 100:.2f}% of {result['samples']}")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    fig.tight_layout()
    suffix = Path(path).suffix.lstrip(".").lower() or "png"
    try:
        write_atomically(path, lambda f: fig.savefig(f, format=suffix))
    finally:
        plt.close(fig)


# --- the command ---------------------------------------------------------------------------
class _SharedError(UserError):
    """Bad input that rank 0 found and told every rank of; rank 0 alone reports it."""


def _read_checkpoint(args):
    from .. import checkpoint as ckpt_io

    if args.plot:
        require_matplotlib(f"--plot {args.plot}")  # before the work, not after it
    return ckpt_io.load(args.checkpoint)


def _prepare(args, ckpt):
    """Model and data on this rank from a checkpoint already read, or UserError."""
    from ..data import Dataset, load_dataset
    from ..meta import describe, rebuild, shape_text

    source = str(args.checkpoint)
    model, meta = rebuild(ckpt, source)
    if meta.get("task", "classification") != "classification":
        raise UserError(f"{source}: a {meta['task']} checkpoint; evaluate scores classifiers")
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise UserError(f"{source}: checkpoint does not say which dataset it was trained on; pass --dataset")
    users_arrays = dataset.startswith("npz:")  # --dataset npz:PATH, as training took them
    if users_arrays:
        data = _npz_split(dataset[4:], args.split, meta)
    else:
        data_dir = args.data_dir
        if data_dir is None and dataset == ckpt.config.get("dataset"):
            data_dir = ckpt.config.get("data_dir")  # where training found it
        data = load_dataset(dataset, args.split, data_dir=data_dir, download=args.download)
    if list(data.input_shape) != list(meta["input_shape"]) or data.num_classes != meta["num_outputs"]:
        raise UserError(f"{source}: checkpoint is {describe(meta)}, but {dataset} {args.split} has "
                        f"{shape_text(data.input_shape)} images in {data.num_classes} classes")
    if not users_arrays:  # (after the check: a mean of the wrong length would not build)
        # The checkpoint's normalisation is the one the model was trained with.
        std = meta.get("std") or [1.0] * len(meta["mean"])
        data = Dataset(name=data.name, images=data.images, labels=data.labels, classes=data.classes,
                       mean=tuple(meta["mean"]), std=tuple(std))
    classes = [str(c) for c in (meta.get("classes") or data.classes)]
    return model, meta, data, classes


def _npz_split(path, split: str, meta: dict):
    """One split of an .npz of the user's arrays, normalised as the checkpoint's training
    was (its recorded mean and std, in the arrays' own units)."""
    from ..data.arrays import ArrayDataset, load_npz

    part = dict(zip(("train", "test"), load_npz(path)))[split]
    if part.task != "classification":
        raise UserError(f"{part.name}: float targets (regression); evaluate scores classifiers")
    return ArrayDataset(part.inputs, part.targets, mean=meta.get("mean"), std=meta.get("std"),
                        classes=meta.get("classes") or part.classes, name=part.name)


def run(args, comm) -> dict:
    """The evaluation on every rank.  Rank 0 reads the checkpoint (it may be the only rank
    that sees it) and checks the data first, then shares the checkpoint or the error, so
    bad input ends the job with one message and exit code 2 on every rank."""
    import numpy as np

    from ..data.loader import shard_bounds

    if args.batch_size < 1:  # every rank sees this one itself
        raise _SharedError(f"--batch-size: must be >= 1, got {args.batch_size}")
    from ..distributed.checkpoint_broadcast import broadcast_resume_point
    from ..distributed.faults import agreed

    prepared = shared = None
    if comm.rank == 0:
        try:
            ckpt = _read_checkpoint(args)
            prepared = _prepare(args, ckpt)
            shared = ("ckpt", (ckpt, str(args.checkpoint)))
        except UserError as exc:
            shared = ("error", str(exc))
    # raw arrays and a JSON header, as on resume: no rank unpickles what came over the network
    kind, value = broadcast_resume_point(comm, shared)
    if kind == "error":
        raise _SharedError(value)
    with agreed(comm):  # a rank that cannot read the data ends every rank with its one line
        if prepared is None:
            prepared = _prepare(args, value[0])
    model, meta, data, classes = prepared
    start, stop = shard_bounds(len(data), comm.rank, comm.size)
    confusion, loss_sum = confusion_and_loss(model, data, start, stop, args.batch_size, args.tta_flip)
    totals = np.concatenate([[loss_sum], confusion.ravel()]).astype(np.float64)
    comm.allreduce(totals)  # counts stay exact in float64 far beyond any dataset's size
    confusion = np.rint(totals[1:]).astype(np.int64).reshape(confusion.shape)
    result = {"checkpoint": str(args.checkpoint), "model": meta["model"]["spec"], "dataset": data.name,
              "split": args.split, "classes": classes}
    result.update(summarize(confusion, float(totals[0])))
    return result


def main(argv=None) -> int:
    one_blas_thread()
    args = build_parser().parse_args(argv)
    from ..distributed import get_communicator
    from ..distributed.faults import fail, install_excepthook

    try:
        comm = get_communicator()
    except UserError as exc:
        return report_user_error(exc)
    install_excepthook(comm)
    try:
        result = run(args, comm)
    except UserError as exc:
        if getattr(exc, "distnet_agreed", None):
            fail(comm, exc)  # every rank knows: the failing one says it, all exit
        if comm.size == 1 or comm.rank == 0:
            return report_user_error(exc)
        if isinstance(exc, _SharedError):
            return 2  # rank 0 says it
        fail(comm, exc)  # only this rank saw it: end the job
    if comm.rank != 0:
        return 0
    try:
        if args.plot:
            draw_confusion(result, args.plot, require_matplotlib(f"--plot {args.plot}"))
    except OSError as exc:
        return report_user_error(f"{args.plot}: cannot write: {exc.strerror or exc}")
    print(json.dumps(result) if args.json else format_text(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
