"""``--run-dir runs/NAME``: one folder that says everything about a training run.

  config.toml    the resolved configuration, written when the run starts; ``--config
                 runs/NAME/config.toml`` repeats (or, with ``--resume``, continues) the run
  metrics.jsonl  the train and eval events (``--metrics``)
  checkpoints/   ``latest.npz`` and the numbered ones (``--checkpoint-dir``)
  summary.json   written when the run ends: best and final test accuracy, wall time,
                 images/s, world size, host names, versions of distnet, numpy and MPI

Rank 0 alone writes, like every other file of a run; files are replaced atomically.
"""
from __future__ import annotations

import json
import math
import platform
from pathlib import Path

from .cli._common import write_atomically


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def config_toml(cfg) -> str:
    """The configuration as TOML, flag names as keys; unset (None) settings are left out, so
    they keep their defaults when the file is read back."""
    lines = ["# the resolved configuration of this run; reuse with: python -m distnet.train --config FILE"]
    for key, value in cfg.to_dict().items():
        if value is not None:
            lines.append(f"{key.replace('_', '-')} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def start(cfg) -> None:
    """Create the folder and write config.toml (rank 0, before training)."""
    folder = Path(cfg.run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / "config.toml", config_toml(cfg).encode())


def _eval_accuracies(metrics_path) -> list[float]:
    try:
        lines = Path(metrics_path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("event") == "eval" and "accuracy" in record:
            found.append(float(record["accuracy"]))
    return found


def versions(comm) -> dict:
    import numpy

    from . import __version__
    out = {"distnet": __version__, "numpy": numpy.__version__, "python": platform.python_version(),
           "mpi4py": None, "mpi": None}
    if comm.size > 1:
        import mpi4py
        from mpi4py import MPI
        out["mpi4py"] = mpi4py.__version__
        out["mpi"] = MPI.Get_library_version().strip().splitlines()[0]
    return out


def summary(cfg, comm, result: dict, wall_seconds: float, hosts: list[str]) -> dict:
    """What summary.json holds.  Best accuracy comes from every eval event in metrics.jsonl,
    so a run resumed several times reports the best of all its parts."""
    accuracies = _eval_accuracies(cfg.metrics) if cfg.metrics else []
    final = result.get("eval")
    train_time = result.get("train_time", 0.0)
    images = result.get("images", 0)
    return {
        "run_dir": str(cfg.run_dir), "model": cfg.model, "dataset": cfg.dataset,
        "steps": result.get("step"), "completed": result.get("completed"),
        "final_accuracy": final.get("accuracy") if final else None,  # None for regression
        "final_loss": final["loss"] if final else None,
        "best_accuracy": max(accuracies) if accuracies else (final.get("accuracy") if final else None),
        "wall_seconds": round(wall_seconds, 3),
        "train_seconds": round(train_time, 3),
        "images_trained": int(images),
        "images_per_sec": round(images / train_time, 1) if train_time > 0 else None,
        "world_size": comm.size,
        "hosts": sorted(set(hosts)),
        "versions": versions(comm),
        "checkpoint": str(Path(cfg.checkpoint_dir) / "latest.npz") if cfg.checkpoint_dir else None,
    }


def finish(cfg, comm, result: dict, wall_seconds: float) -> None:
    """Every rank calls this (the host names are gathered); rank 0 writes summary.json."""
    import socket

    hosts = comm.gather_object(socket.gethostname()) if comm.size > 1 else [socket.gethostname()]
    if comm.rank != 0:
        return
    data = summary(cfg, comm, result, wall_seconds, hosts)
    write_atomically(Path(cfg.run_dir) / "summary.json", (json.dumps(data, indent=2) + "\n").encode())
