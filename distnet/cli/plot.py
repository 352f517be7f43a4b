"""``python -m distnet.plot RUN_OR_METRICS... -o curves.png``: training curves from metrics.jsonl.

One figure, six panels: loss and accuracy against step (train: the logged windows; test: each
evaluation), the same against epoch (train: the mean of the epoch's windows; test: the
epoch's last evaluation), training throughput against step, and a table of each run's best
and final test accuracy.  Several runs overlay, one colour each, with a legend; train is a
solid line, test dashed with markers.

A run folder (``--run-dir``) or a metrics file may be given; the label is the folder's name
(or the file's, without .jsonl).  matplotlib is an optional extra: ``pip install
'distnet[plot]'``.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ._common import Parser, report_user_error, require_matplotlib, write_atomically


def build_parser() -> Parser:
    p = Parser(prog="distnet plot", description="Plot loss, accuracy and throughput of one or more runs.")
    p.add_argument("runs", metavar="RUN_OR_METRICS", nargs="+",
                   help="a run folder (holding metrics.jsonl) or a metrics .jsonl file")
    p.add_argument("-o", "--output", default="curves.png", metavar="FILE.png", help="(default curves.png)")
    p.add_argument("--label", action="append", default=[], help="legend label per run, in order (repeatable)")
    return p


@dataclass
class Run:
    label: str
    path: Path
    train: list = field(default_factory=list)
    test: list = field(default_factory=list)


def read_run(arg: str, label: str | None = None) -> Run:
    path = Path(arg)
    metrics = path / "metrics.jsonl" if path.is_dir() else path
    if not metrics.is_file():
        where = f"{path}: no metrics.jsonl in this folder" if path.is_dir() else f"{path}: file not found"
        raise UserError(where)
    if label is None:  # runs/NAME or runs/NAME/metrics.jsonl -> NAME; other.jsonl -> other
        default_name = metrics.name == "metrics.jsonl" and metrics.resolve().parent.name
        label = path.name if path.is_dir() else (default_name or metrics.name.removesuffix(".jsonl"))
    name = label
    run = Run(name, metrics)
    try:
        text = metrics.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{metrics}: cannot read: {exc}") from None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(text.splitlines()):
                continue  # a line cut short by a run still writing, or killed mid-line
            raise UserError(f"{metrics}:{number}: not a JSON line") from None
        if not isinstance(record, dict) or "step" not in record:
            raise UserError(f"{metrics}:{number}: not a distnet metrics record")
        if record.get("event") == "train":
            run.train.append(record)
        elif record.get("event") == "eval":
            run.test.append(record)
    # A resumed run appends: a step seen again replaces the earlier record of it.
    run.train = list({r["step"]: r for r in run.train}.values())
    run.test = list({r["step"]: r for r in run.test}.values())
    run.train.sort(key=lambda r: r["step"])
    run.test.sort(key=lambda r: r["step"])
    if not run.train and not run.test:
        raise UserError(f"{metrics}: no train or eval records to plot")
    return run


def per_epoch(records, key: str, how: str):
    """(epochs, values): the mean (train) or last (test) value of ``key`` in each epoch."""
    groups: dict[int, list] = {}
    for r in records:
        if key in r and r[key] is not None:
            groups.setdefault(int(r.get("epoch", 1)), []).append(float(r[key]))
    epochs = sorted(groups)
    if how == "mean":
        return epochs, [sum(groups[e]) / len(groups[e]) for e in epochs]
    return epochs, [groups[e][-1] for e in epochs]


def _series(records, key):
    pts = [(r["step"], float(r[key])) for r in records if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def figure(runs: list[Run], plt):
    """The matplotlib figure of ``runs`` (not yet saved)."""
    fig, axes = plt.subplots(2, 3, figsize=(16, 9), dpi=100)
    (loss_step, acc_step, speed), (loss_epoch, acc_epoch, table) = axes
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        c = colours[i % len(colours)]
        for ax, key, scale in ((loss_step, "loss", 1), (acc_step, "accuracy", 100)):
            x, y = _series(run.train, key)
            ax.plot(x, [v * scale for v in y], color=c, lw=1.4, label=f"{run.label} train")
            x, y = _series(run.test, key)
            ax.plot(x, [v * scale for v in y], color=c, lw=1.4, ls="--", marker="o", ms=4,
                    label=f"{run.label} test")
        for ax, key, scale in ((loss_epoch, "loss", 1), (acc_epoch, "accuracy", 100)):
            x, y = per_epoch(run.train, key, "mean")
            ax.plot(x, [v * scale for v in y], color=c, lw=1.4, marker="s", ms=4, label=f"{run.label} train")
            x, y = per_epoch(run.test, key, "last")
            ax.plot(x, [v * scale for v in y], color=c, lw=1.4, ls="--", marker="o", ms=4,
                    label=f"{run.label} test")
        x, y = _series(run.train, "images_per_sec")
        speed.plot(x, y, color=c, lw=1.4, label=run.label)
    for ax, title, xlabel, ylabel in (
            (loss_step, "loss vs step", "step", "cross-entropy loss"),
            (acc_step, "accuracy vs step", "step", "accuracy (%)"),
            (speed, "training throughput", "step", "images/s (whole job)"),
            (loss_epoch, "loss vs epoch", "epoch", "cross-entropy loss"),
            (acc_epoch, "accuracy vs epoch", "epoch", "accuracy (%)")):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in (loss_step, loss_epoch):
        ax.set_yscale("log")
    for ax in (loss_epoch, acc_epoch):
        ax.xaxis.get_major_locator().set_params(integer=True)
    table.axis("off")
    table.set_title("test accuracy")
    rows = []
    for run in runs:
        acc = [float(r["accuracy"]) for r in run.test if "accuracy" in r]
        rows.append([run.label, f"{max(acc) * 100:.2f}%" if acc else "-", f"{acc[-1] * 100:.2f}%" if acc else "-",
                     str(run.test[-1]["step"] if run.test else run.train[-1]["step"])])
    cells = table.table(cellText=rows, colLabels=["run", "best", "final", "steps"], loc="upper center",
                        cellLoc="center")
    cells.scale(1, 1.6)
    fig.suptitle(", ".join(r.label for r in runs))
    fig.tight_layout()
    return fig


def draw(runs: list[Run], output: str, plt) -> None:
    """Save the figure of ``runs`` to ``output`` atomically (the format from its suffix)."""
    fig = figure(runs, plt)
    suffix = Path(output).suffix.lstrip(".").lower() or "png"
    try:
        write_atomically(output, lambda f: fig.savefig(f, format=suffix))
    finally:
        plt.close(fig)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.label and len(args.label) != len(args.runs):
            raise UserError(f"--label: given {len(args.label)} times for {len(args.runs)} runs")
        plt = require_matplotlib(f"{args.output}: plotting")
        labels = args.label or [None] * len(args.runs)
        runs = [read_run(r, label) for r, label in zip(args.runs, labels)]
        draw(runs, args.output, plt)
    except UserError as exc:
        return report_user_error(exc)
    except OSError as exc:
        return report_user_error(f"{args.output}: cannot write: {exc.strerror or exc}")
    except ValueError as exc:  # matplotlib: an output suffix it has no writer for
        return report_user_error(f"{args.output}: {exc}")
    print(f"distnet: wrote {args.output} ({len(runs)} run{'s' * (len(runs) != 1)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
