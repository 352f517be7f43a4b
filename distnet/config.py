"""Command-line flags and ``--config FILE.toml`` merged into one validated TrainConfig.

Precedence: built-in defaults < TOML file < flags given on the command line.  TOML keys are
the flag names (``batch-size`` or ``batch_size``).  The defaults are the recipe that reaches
>= 99.2% MNIST test accuracy in 6 epochs: cnn2, Adam, one-cycle to a peak lr of 3e-3 after
500 of its 2,814 steps, batch 128, 1-pixel shifts.  Measured on the 2-core machine, quiet,
2026-12-01: 99.31% in 41.8 s wall with ``mpirun -n 2`` (seed 1: 99.33%), 99.35% in 74.1 s on
one process; Fashion-MNIST with the same defaults 90.20% / 90.36% (seeds 0/1).  Why 6 and not
5 epochs: 5 reached MNIST 99.26-99.38% in 33 s (two ranks) but Fashion-MNIST only
89.98%/90.04%; shifts of 2 pixels gave MNIST 99.24-99.32% but Fashion 89.25%; none 99.21%
and 90.55%.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .cli._common import Parser
from .errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OPTIMIZERS = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")
LOSSES = ("cross-entropy", "mse")
SCHEDULES = ("constant", "step", "cosine", "onecycle")
CROP_MODES = ("reflect", "zero")
DECAY_EXCLUDES = ("none", "bn", "bias", "bn-bias")


@dataclass
class TrainConfig:
    dataset: str = "mnist"
    data_dir: str | None = None
    model: str = "cnn2"
    loss: str = "cross-entropy"
    epochs: int = 6
    max_steps: int | None = None
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    warmup_steps: int = 500
    seed: int = 0
    augment_shift: int = 1
    augment_crop: int = 0
    augment_crop_mode: str = "reflect"
    augment_flip: bool = False
    augment_cutout: int = 0
    label_smoothing: float = 0.0
    weight_decay_exclude: str = "none"
    freeze_bn_scale: bool = False
    bn_bias_lr_scale: float = 1.0
    lookahead: bool = False
    ema: float = 0.0
    tta_flip: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    resume: str | None = None
    eval_every: int | None = None
    # 100, not 1000: cnn2's im2col workspaces at 1000 images are ~210 MB, at 100 ~21 MB; the
    # default MNIST job's peak RSS per rank went from 426 to ~160 MB with the shared data
    # cache (benchmarks/memory.py, 2 ranks) and evaluation was no slower (median 4.0 s
    # against 8.4 s at 1000 for the 10,000 test images, 3 interleaved rounds, loaded machine)
    eval_batch_size: int = 100
    metrics: str | None = None
    log_every: int = 50
    no_progress: bool = False
    timeout: float = 300.0
    overlap: bool = False
    bucket_mb: float = 1.0
    compress: str = "none"
    deterministic: bool = False
    micro_batches: int = 0
    threads: int | None = None
    download: bool = True
    run_dir: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = Parser(
        prog="python -m distnet.train",
        description="Train a NumPy CNN, on one process or data-parallel under mpirun "
                    "(e.g. mpirun -n 4 python -m distnet.train).",
        argument_default=argparse.SUPPRESS)
    a = p.add_argument
    a("--config", metavar="FILE.toml", help="TOML file whose keys are these flags' names")
    a("--dataset", help=f"mnist, fashion-mnist, cifar10, synthetic, or npz:PATH for an .npz holding "
      f"x_train, y_train, x_test, y_test (default {d.dataset})")
    a("--data-dir", metavar="DIR", help="directory holding the dataset's files (default: $DISTNET_DATA, "
      "else a cache directory; MNIST falls back to the copy inside the package)")
    a("--model", help=f"lenet5, cnn2, mlp, cifar-cnn, cifar-resnet, cifar-fast, or your own: "
      f"path/to/file.py:function or package.module:function, a function (input_shape, num_classes) "
      f"-> Sequential (default {d.model})")
    a("--loss", choices=LOSSES, help=f"cross-entropy (integer labels) or mse (float targets, regression; "
      f"reports the test loss instead of accuracy) (default {d.loss})")
    a("--epochs", type=int, help=f"number of epochs (default {d.epochs})")
    a("--max-steps", type=int, help="stop after this many optimizer steps in total")
    a("--batch-size", type=int, help=f"GLOBAL batch size, split over the ranks (default {d.batch_size})")
    a("--optimizer", choices=OPTIMIZERS, help=f"(default {d.optimizer})")
    a("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    a("--momentum", type=float, help=f"momentum for momentum/nesterov/rmsprop (default {d.momentum})")
    a("--weight-decay", type=float, help=f"(default {d.weight_decay})")
    a("--schedule", choices=SCHEDULES, help=f"learning-rate schedule (default {d.schedule})")
    a("--warmup-steps", type=int, help=f"linear warm-up steps; for onecycle, the steps rising to the peak "
      f"(default {d.warmup_steps})")
    a("--seed", type=int, help=f"seed for weights and data order (default {d.seed})")
    a("--augment-shift", type=int, metavar="PIXELS",
      help=f"randomly translate training images by up to PIXELS (default {d.augment_shift})")
    a("--augment-crop", type=int, metavar="PIXELS",
      help="random crop of the image padded by PIXELS on each side (CIFAR: 4; default 0: off)")
    a("--augment-crop-mode", choices=CROP_MODES,
      help=f"padding for --augment-crop: reflect the image, or zero (black) pixels (default {d.augment_crop_mode})")
    a("--augment-flip", action="store_true", help="mirror half the training images left-right")
    a("--augment-cutout", type=int, metavar="PIXELS",
      help="blank a random PIXELS x PIXELS square of each training image (default 0: off)")
    a("--label-smoothing", type=float, metavar="EPS",
      help=f"cross-entropy against (1 - EPS) one-hot + EPS / classes, as PyTorch (default {d.label_smoothing:g})")
    a("--weight-decay-exclude", choices=DECAY_EXCLUDES,
      help="parameters left out of weight decay: BatchNorm's, biases, or both (default none)")
    a("--freeze-bn-scale", action="store_true",
      help="keep every BatchNorm scale at 1 (BatchNorm without affine scale; its shift still learns)")
    a("--bn-bias-lr-scale", type=float, metavar="FACTOR",
      help="train BatchNorm shifts at FACTOR times the learning rate, e.g. 64 (SGD only; default 1)")
    a("--lookahead", action="store_true",
      help="every 5 steps pull the weights toward a slow average, more strongly as the run ends (airbench's)")
    a("--ema", type=float, metavar="DECAY",
      help="evaluate an exponential moving average of the weights with this decay, e.g. 0.99 (default 0: off)")
    a("--tta-flip", action="store_true", help="evaluate on the mean of the logits of each image and its mirror image")
    a("--checkpoint-dir", metavar="DIR", help="write checkpoints here (a final one always)")
    a("--checkpoint-every", type=int, metavar="STEPS", help="also checkpoint every STEPS steps (0: never)")
    a("--keep-checkpoints", type=int, metavar="N", help=f"numbered checkpoints kept (default {d.keep_checkpoints})")
    a("--resume", nargs="?", const="latest", metavar="PATH",
      help="continue from PATH, or from CHECKPOINT_DIR/latest.npz if no PATH (fresh start if none exists yet)")
    a("--eval-every", type=int, metavar="STEPS", help="evaluate every STEPS steps (default: each epoch; 0: only at the end)")
    a("--eval-batch-size", type=int, help=f"(default {d.eval_batch_size})")
    a("--metrics", metavar="FILE", help="append one JSON object per line: train and eval events")
    a("--log-every", type=int, metavar="STEPS", help=f"train metrics every STEPS steps (default {d.log_every})")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--timeout", type=float, metavar="SECONDS", help=f"abort when no step completes for this long (default {d.timeout:g})")
    a("--overlap", action="store_true", help="overlap gradient allreduce (in buckets) with backward")
    a("--bucket-mb", type=float, help=f"bucket size for --overlap in MiB (default {d.bucket_mb:g})")
    a("--compress", choices=("none", "fp16"), help="gradients travel as float16 with error feedback "
      "(half the bytes; the trajectory is no longer bitwise, so not with --deterministic; default none)")
    a("--deterministic", action="store_true", help="bitwise identical results for any number of ranks (slower)")
    a("--micro-batches", type=int, metavar="K", help="micro-batches per global batch for --deterministic (default: 8 or the world size)")
    a("--threads", type=int, help="BLAS threads per process (default 1: use more ranks for more cores)")
    a("--no-download", dest="download", action="store_false", help="never try to download data")
    a("--run-dir", metavar="DIR", help="one folder for the run: config.toml, metrics.jsonl, checkpoints/, "
      "summary.json (sets --checkpoint-dir and --metrics unless given)")
    return p


def _read_toml(path: str) -> dict:
    path = os.path.expanduser(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in fields and name.startswith("no_") and name[3:] in fields:
            # a flag that stores its negation (--no-download sets download = false)
            if not isinstance(value, bool):
                raise UserError(f"{path}: {key} must be true or false, got {value!r}")
            name, value = name[3:], not value
        if name not in fields:
            raise UserError(f"{path}: unknown key {key!r}")
        out[name] = value
    return out


def _coerce(name: str, value, source: str):
    default = getattr(TrainConfig(), name)
    kind = type(default) if default is not None else None
    hints = {"data_dir": str, "max_steps": int, "checkpoint_dir": str, "resume": str,
             "eval_every": int, "metrics": str, "threads": int, "run_dir": str}
    kind = hints.get(name, kind)
    if value is None:
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{source}: {name.replace('_', '-')} must be true or false, got {value!r}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    wrong_type = kind is not None and not isinstance(value, kind)
    bool_for_number = isinstance(value, bool)  # True is an int to Python, not to a user
    if wrong_type or bool_for_number:
        raise UserError(f"{source}: {name.replace('_', '-')} must be {kind.__name__}, got {value!r}")
    return value


def parse_config(argv=None) -> TrainConfig:
    """Parse flags (and a TOML file), validate, return the configuration."""
    args = vars(build_parser().parse_args(argv))
    values = {}
    config_file = args.pop("config", None)
    if config_file:
        for name, value in _read_toml(config_file).items():
            values[name] = _coerce(name, value, config_file)
    values.update(args)
    expand_user_paths(values)
    cfg = TrainConfig(**values)
    if cfg.run_dir:  # the run folder's defaults; explicit flags win
        cfg.checkpoint_dir = cfg.checkpoint_dir or str(Path(cfg.run_dir) / "checkpoints")
        cfg.metrics = cfg.metrics or str(Path(cfg.run_dir) / "metrics.jsonl")
    validate(cfg)
    return cfg


PATH_OPTIONS = ("data_dir", "checkpoint_dir", "resume", "metrics", "run_dir")


def expand_user_paths(values: dict) -> None:
    """``~`` and ``~user`` in every path option, as a shell would have done for an unquoted
    flag (a TOML file or a quoted flag gets no shell expansion). ``--resume``'s keyword
    ``latest`` is not a path and stays."""
    for name in PATH_OPTIONS:
        value = values.get(name)
        if isinstance(value, str) and not (name == "resume" and value == "latest"):
            values[name] = os.path.expanduser(value)


def validate(cfg: TrainConfig) -> None:
    def bad(flag, why):
        raise UserError(f"--{flag}: {why}")

    from .data import list_datasets
    from .nn import MODELS

    if cfg.model not in MODELS and ":" not in cfg.model:
        bad("model", f"unknown model {cfg.model!r}; choose from {', '.join(MODELS)}, or give "
                     f"path/to/file.py:function or package.module:function")
    if cfg.dataset not in list_datasets() and not (cfg.dataset.startswith("npz:") and len(cfg.dataset) > 4):
        bad("dataset", f"unknown dataset {cfg.dataset!r}; choose from {', '.join(list_datasets())} "
                       f"or npz:PATH")
    if cfg.loss not in LOSSES:
        bad("loss", f"must be one of {', '.join(LOSSES)}, got {cfg.loss!r}")
    if cfg.epochs < 1:
        bad("epochs", f"must be >= 1, got {cfg.epochs}")
    if cfg.seed < 0:
        bad("seed", f"must be >= 0, got {cfg.seed}")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        bad("max-steps", f"must be >= 1, got {cfg.max_steps}")
    if cfg.batch_size < 1:
        bad("batch-size", f"must be >= 1, got {cfg.batch_size}")
    if cfg.optimizer not in OPTIMIZERS:
        bad("optimizer", f"must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")
    if cfg.schedule not in SCHEDULES:
        bad("schedule", f"must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    # Written so that nan fails every test (nan compares false) and inf fails isfinite.
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        bad("lr", f"must be a finite number > 0, got {cfg.lr}")
    if not (math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        bad("weight-decay", f"must be a finite number >= 0, got {cfg.weight_decay}")
    if not 0 <= cfg.momentum < 1:
        bad("momentum", f"must be in [0, 1), got {cfg.momentum}")
    # a setting the run would ignore is refused, not dropped without a word (only when it
    # differs from its default: a flag given its default value cannot be told apart)
    if cfg.momentum != TrainConfig.momentum and cfg.optimizer not in ("momentum", "nesterov"):
        bad("momentum", f"is used by --optimizer momentum and nesterov only, not {cfg.optimizer}")
    if cfg.micro_batches and not cfg.deterministic:
        bad("micro-batches", "splits the batch for --deterministic only; add --deterministic")
    if cfg.micro_batches > cfg.batch_size:
        bad("micro-batches", f"{cfg.micro_batches} micro-batches do not fit a batch of {cfg.batch_size}")
    if not (math.isfinite(cfg.bucket_mb) and cfg.bucket_mb > 0):
        bad("bucket-mb", f"must be a finite number of MiB > 0, got {cfg.bucket_mb}")
    if cfg.bucket_mb != TrainConfig.bucket_mb and not cfg.overlap:
        bad("bucket-mb", "sizes the buckets of --overlap only; add --overlap")
    for flag, value in (("checkpoint-every", cfg.checkpoint_every), ("warmup-steps", cfg.warmup_steps),
                        ("keep-checkpoints", cfg.keep_checkpoints), ("micro-batches", cfg.micro_batches),
                        ("augment-shift", cfg.augment_shift)):
        if value < 0:
            bad(flag, f"must be >= 0, got {value}")
    if cfg.compress not in ("none", "fp16"):
        bad("compress", f"must be none or fp16, got {cfg.compress!r}")
    if cfg.compress != "none" and cfg.deterministic:
        bad("compress", "cannot be combined with --deterministic (float16 rounding depends on the world size)")
    validate_augment_and_regularisers(cfg, bad)
    if cfg.eval_every is not None and cfg.eval_every < 0:
        bad("eval-every", f"must be >= 0, got {cfg.eval_every}")
    if cfg.log_every < 1:
        bad("log-every", f"must be >= 1, got {cfg.log_every}")
    if cfg.eval_batch_size < 1:
        bad("eval-batch-size", f"must be >= 1, got {cfg.eval_batch_size}")
    if not (math.isfinite(cfg.timeout) and cfg.timeout > 0):
        bad("timeout", f"must be a finite number of seconds > 0, got {cfg.timeout}")
    if cfg.threads is not None and cfg.threads < 1:
        bad("threads", f"must be >= 1, got {cfg.threads}")
    if cfg.checkpoint_every and not cfg.checkpoint_dir:
        bad("checkpoint-every", "needs --checkpoint-dir")
    if cfg.resume == "latest" and not cfg.checkpoint_dir:
        bad("resume", "needs --checkpoint-dir (or a checkpoint path: --resume PATH)")
    if cfg.run_dir and Path(cfg.run_dir).exists() and not Path(cfg.run_dir).is_dir():
        bad("run-dir", f"{cfg.run_dir} exists and is not a directory")
    if cfg.checkpoint_dir and Path(cfg.checkpoint_dir).exists() and not Path(cfg.checkpoint_dir).is_dir():
        bad("checkpoint-dir", f"{cfg.checkpoint_dir} exists and is not a directory")


def validate_augment_and_regularisers(cfg: TrainConfig, bad) -> None:
    """The CIFAR recipe's settings: augmentation, label smoothing, decay exclusion."""

    for flag, value in (("augment-crop", cfg.augment_crop), ("augment-cutout", cfg.augment_cutout)):
        if value < 0:
            bad(flag, f"must be >= 0, got {value}")
    if cfg.augment_crop and cfg.augment_shift:
        bad("augment-crop", f"moves the image like --augment-shift (now {cfg.augment_shift}); "
                            "choose one: add --augment-shift 0")
    if cfg.augment_crop_mode not in CROP_MODES:
        bad("augment-crop-mode", f"must be one of {', '.join(CROP_MODES)}, got {cfg.augment_crop_mode!r}")
    if not (math.isfinite(cfg.label_smoothing) and 0.0 <= cfg.label_smoothing <= 1.0):
        bad("label-smoothing", f"must be in [0, 1], got {cfg.label_smoothing}")
    if not (math.isfinite(cfg.ema) and 0.0 <= cfg.ema < 1.0):
        bad("ema", f"must be in [0, 1) (0: off), got {cfg.ema}")
    if cfg.lookahead and cfg.ema:
        bad("lookahead", "and --ema both average the weights; choose one")
    if not (math.isfinite(cfg.bn_bias_lr_scale) and cfg.bn_bias_lr_scale > 0):
        bad("bn-bias-lr-scale", f"must be a positive number (1: off), got {cfg.bn_bias_lr_scale}")
    if cfg.bn_bias_lr_scale != 1.0 and cfg.optimizer not in ("sgd", "momentum", "nesterov"):
        bad("bn-bias-lr-scale", f"needs an SGD optimizer (sgd, momentum, nesterov), not {cfg.optimizer}")
    if cfg.weight_decay_exclude not in DECAY_EXCLUDES:
        bad("weight-decay-exclude", f"must be one of {', '.join(DECAY_EXCLUDES)}, got {cfg.weight_decay_exclude!r}")
