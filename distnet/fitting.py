"""``distnet.fit``: train your model on your data, on one process or under ``mpirun -n N``.

It is written from the public pieces a hand-written loop would use: the communicator
(``distributed.init``), the global-batch loader, ``broadcast_parameters`` and a
``DistributedOptimizer``; rank 0's duties go to a Coordinator and the loop to a Trainer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from . import __version__
from .coordinator import Coordinator
from .data.loader import GlobalBatchLoader
from .distributed import DistributedOptimizer, init
from .distributed.deterministic import DeterministicStep
from .distributed.faults import agreed
from .errors import UserError
from .tasks import check_targets, loss_name, probe_outputs, resolve_loss, task_of
from .nn import set_stat_reducer
from .trainer import Trainer


@dataclass
class History:
    """What ``fit`` returns on every rank: ``records``, the metric lines as dicts (the ones
    ``metrics=FILE`` writes), ``final``, the last evaluation (or None), and ``step``, the
    number of optimizer steps completed."""

    records: list = field(default_factory=list)
    final: dict | None = None
    step: int = 0
    train_time: float = 0.0
    images: int = 0  # samples trained by this call (all ranks together)
    completed: bool = False  # reached the last step (not stopped by a signal)


def _positive(name: str, value, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value >= 1)
    if not ok:
        raise UserError(f"{name} must be an integer >= {0 if allow_zero else 1}, got {value!r}")


def model_origin(model):
    """What rebuilds ``model``: the spec it was built from (``model.origin``), or, for a
    network built by hand from distnet's layers, its architecture (``nn.architecture``);
    None when it holds a layer of the user's own, which only their code can rebuild."""
    origin = getattr(model, "origin", None)
    if origin is not None:
        return origin
    from .nn.architecture import describe
    layers = describe(model)
    return None if layers is None else {"spec": "Sequential", "args": {}, "architecture": layers}


def input_units(train) -> dict:
    """What the model's raw inputs are, so that ``distnet predict`` feeds it the same: image
    datasets hand out pixel / 255 (``mean``/``std`` in those units); an ArrayDataset its
    arrays' values as they are (``mean``/``std`` in the arrays' units), whose range tells
    whether an image's pixels are 0..255 or 0..1 there."""
    from .data.arrays import ArrayDataset
    if not isinstance(train, ArrayDataset):
        return {"inputs": "pixels/255"}
    x = train.inputs
    return {"inputs": "as given", "input_range": [float(x.min()), float(x.max())] if x.size else None}


def run_meta(model, train, loss, dataset: str | None, output_shape) -> dict:
    """The checkpoint meta of contract B: what rebuilds the model and its input pipeline."""
    task = task_of(train)
    classes = getattr(train, "classes", None)
    mean, std = getattr(train, "mean", None), getattr(train, "std", None)
    return {
        "model": model_origin(model),
        "input_shape": [int(d) for d in train.input_shape],
        "num_outputs": int(math.prod(output_shape)),
        "classes": [str(c) for c in classes] if task == "classification" and classes is not None else None,
        "mean": None if mean is None else [float(m) for m in mean],
        "std": None if std is None else [float(s) for s in std],
        "task": task,
        **input_units(train),
        "loss": loss_name(loss),
        "dataset": dataset if dataset is not None else getattr(train, "name", None),
        "distnet_version": __version__,
    }


def fit(model, train, *, loss, optimizer, epochs: int = 1, batch_size: int = 128, test=None,
        schedule=None, seed: int = 0, max_steps: int | None = None, eval_every: int | None = None,
        checkpoint_dir=None, checkpoint_every: int = 0, resume=False, metrics=None, progress=None,
        deterministic: bool = False, overlap: bool = False, augment=None, comm=None, tta_flip: bool = False,
        micro_batches: int | None = None, keep_checkpoints: int = 3, log_every: int = 50,
        eval_batch_size: int = 100, bucket_mb: float = 1.0, timeout: float | None = None,
        verbose: bool = True, dataset_name: str | None = None, config: dict | None = None,
        compress: str | None = None) -> History:
    """Train ``model`` (a ``distnet.nn.Sequential``) on ``train`` and return a History.

    * ``loss``: ``nn.CrossEntropyLoss()`` (integer labels) or ``nn.MSELoss()`` (float
      targets), or their names "cross-entropy", "mse".  ``optimizer``: a distnet optimizer
      over ``model`` (``optim.SGD(model, lr=0.01)``); ``schedule(step) -> lr`` sets its
      learning rate before each step (default: leave it as it is).
    * ``batch_size`` is the GLOBAL batch: under ``mpirun -n N`` each rank computes 1/N of
      it, and the run follows the trajectory of one process (to float rounding; bitwise with
      ``deterministic=True``, which also makes BatchNorm use per-micro-batch statistics).
    * ``epochs`` passes over ``train`` (order from ``seed`` and the epoch), stopping early at
      ``max_steps``.  ``test`` is evaluated each epoch (``eval_every`` steps; 0: at the end).
    * ``checkpoint_dir`` gets a checkpoint at the end (and every ``checkpoint_every`` steps);
      ``resume=True`` continues from its latest.npz (a path: from that file).
    * ``augment=K`` shifts training images by up to K pixels; an ``ImageAugment`` (crop,
      flip, cutout) or a pair ``(K, ImageAugment)`` does more.  ``tta_flip`` evaluates on
      the mean output of each test image and its mirror image.  ``overlap`` overlaps the
      gradient allreduce with backward; ``compress="fp16"`` sends gradients as float16 with
      error feedback (half the bytes; the trajectory is no longer bitwise; not with
      ``deterministic``).  ``metrics`` appends JSON lines to that file;
      ``progress`` shows a progress bar (plain lines off a terminal; default: when
      ``verbose``); ``verbose=False`` prints nothing.
    * ``comm``: the communicator (default ``distnet.distributed.init()``).

    Every rank must call it with the same arguments; every rank gets the History.
    Bad arguments or data raise ValueError (``distnet.errors.UserError``).
    """
    trainer = make_trainer(**locals())  # every argument of fit, by name
    model = trainer.model
    input_grad = getattr(model, "input_grad", True)
    model.input_grad = False  # the input is data: no gradient needed
    try:
        result = trainer.run()
    finally:
        model.input_grad = input_grad
        set_stat_reducer(model, None)  # the model leaves fit MPI-free again
        trainer.optimizer.close()
        if trainer.watchdog is not None:
            trainer.watchdog.stop()
    return History(records=trainer.coordinator.records, final=result["eval"], step=result["step"],
                   train_time=result["train_time"], images=result["images"], completed=result["completed"])


def make_trainer(model, train, *, loss, optimizer, epochs: int = 1, batch_size: int = 128, test=None,
        schedule=None, seed: int = 0, max_steps: int | None = None, eval_every: int | None = None,
        checkpoint_dir=None, checkpoint_every: int = 0, resume=False, metrics=None, progress=None,
        deterministic: bool = False, overlap: bool = False, augment=None, comm=None, tta_flip: bool = False,
        micro_batches: int | None = None, keep_checkpoints: int = 3, log_every: int = 50,
        eval_batch_size: int = 100, bucket_mb: float = 1.0, timeout: float | None = None,
        verbose: bool = True, dataset_name: str | None = None, config: dict | None = None,
        compress: str | None = None) -> Trainer:
    """The Trainer ``fit`` runs, with its objects built and checked (fit's arguments; the
    command line's tests drive one step by step)."""
    comm = comm if comm is not None else init()
    # Every rank checks the same arguments: a refusal on any rank ends all of them with one
    # line (no MPI_Abort), since none has entered a collective yet.
    with agreed(comm):
        loss = resolve_loss(loss)
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("log_every", log_every),
                            ("eval_batch_size", eval_batch_size)):
            _positive(name, value)
        for name, value in (("checkpoint_every", checkpoint_every), ("keep_checkpoints", keep_checkpoints),
                            ("seed", seed)):
            _positive(name, value, allow_zero=True)
        if max_steps is not None:
            _positive("max_steps", max_steps)
        if checkpoint_every and not checkpoint_dir:
            raise UserError("checkpoint_every needs checkpoint_dir")
        if resume is True or resume == "latest":
            if not checkpoint_dir:
                raise UserError("resume=True needs checkpoint_dir (or a checkpoint path: resume=PATH)")
            resume = "latest"
        if compress not in (None, "none", "fp16"):
            raise UserError(f"compress must be one of none, fp16, got {compress!r}")
        if compress not in (None, "none") and deterministic:
            raise UserError("compress cannot be combined with deterministic: its rounding depends on the world size")
        shift, image_augment = _augmentation(augment)
        if shift and len(train.input_shape) != 3:
            raise UserError(f"augment shifts images (C, H, W); these inputs are {tuple(train.input_shape)}")
        if shift and shift >= min(train.input_shape[1:]):
            raise UserError(f"an augment shift of {shift} pixels would move the "
                            f"{train.input_shape[1]}x{train.input_shape[2]} images out of the frame")
        if len(train) == 0:
            raise UserError(f"{getattr(train, 'name', 'train')}: the training set is empty")
        if test is not None and len(test) == 0:
            raise UserError(f"{getattr(test, 'name', 'test')}: the test set is empty")
        if not hasattr(model, "flat_params"):
            raise UserError(f"model must be a distnet.nn.Sequential, got {type(model).__name__}")
        if isinstance(optimizer, DistributedOptimizer):
            optimizer = optimizer.optimizer
        _check_optimizer_of(model, optimizer)
        output_shape = probe_outputs(model, train)
        check_targets(train, loss, output_shape)
        if test is not None:
            check_targets(test, loss, output_shape)

        loader = GlobalBatchLoader(train, batch_size, seed, comm.rank, comm.size, max_shift=shift,
                                   augment=image_augment)
        steps_per_epoch = loader.steps_per_epoch
        total_steps = epochs * steps_per_epoch if max_steps is None else min(epochs * steps_per_epoch, max_steps)
        coordinator = Coordinator(comm.rank, steps_per_epoch, total_steps, eval_every=eval_every,
                                  checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                                  keep_checkpoints=keep_checkpoints, metrics=metrics,
                                  progress=verbose if progress is None else bool(progress), verbose=verbose)
    stepper = None
    if deterministic:
        # ghost batch norm: statistics per micro-batch, the same micro-batches for any world size
        stepper = DeterministicStep(comm, model, micro_batches or 8)
        set_stat_reducer(model, None)
    else:  # BatchNorm statistics of the global batch
        set_stat_reducer(model, comm.allreduce if comm.size > 1 else None)
    dist_optimizer = DistributedOptimizer(optimizer, model, comm, op="sum", overlap=overlap and not deterministic,
                                          bucket_mb=bucket_mb, compress=compress)
    settings = {"batch_size": batch_size, "seed": seed, "deterministic": bool(deterministic),
                "micro_batches": (micro_batches or 0) if deterministic else 0,
                "optimizer": type(optimizer).__name__.lower(), "architecture": repr(model)}
    if config is not None:
        settings.update(config)
    watchdog = None
    if timeout is not None and comm.size > 1:
        from .distributed.faults import Watchdog
        watchdog = Watchdog(comm, timeout).start()
    trainer = Trainer(model, loss, dist_optimizer, schedule, loader, comm, coordinator, test=test,
                      total_steps=total_steps, seed=seed, task=task_of(train), deterministic=stepper,
                      eval_batch_size=eval_batch_size, log_every=log_every, tta_flip=tta_flip,
                      watchdog=watchdog, settings=settings,
                      meta=run_meta(model, train, loss, dataset_name, output_shape),
                      resume=resume or None, checkpoint_dir=checkpoint_dir)
    origin = (getattr(model, "origin", None) or {}).get("spec") or f"a {len(getattr(model, 'layers', []))}-layer model"
    data_name = dataset_name or getattr(train, "name", "data")
    coordinator.say(f"distnet: {origin} on {data_name} ({len(train)} train / "
                    f"{len(test) if test is not None else 0} test), {comm.size} rank(s), "
                    f"global batch {batch_size}, {total_steps} steps")
    return trainer


def _check_optimizer_of(model, optimizer) -> None:
    """An optimizer built over another model's parameters would step those and leave
    ``model`` as it is, a run that trains nothing without a word; refuse it.  Wrappers
    (EMA, Lookahead: ``.optimizer`` and ``.model``) are looked through to the optimizer
    that holds the parameter list."""
    own = {id(p) for p in model.parameters()}
    inner = optimizer
    for _ in range(8):  # wrappers within wrappers, but never a loop
        params = getattr(inner, "params", None)
        if getattr(inner, "model", model) is not model or (
                isinstance(params, list) and not all(id(p) in own for p in params)):
            raise UserError("the optimizer was built over another model's parameters: build it over the "
                            "model given to fit, e.g. optim.SGD(model, lr=0.01)")
        if isinstance(params, list) or not hasattr(inner, "optimizer"):
            return
        inner = inner.optimizer


def _augmentation(augment):
    """(shift pixels, ImageAugment or None) from fit's ``augment``."""
    from .data.augment import ImageAugment

    parts = augment if isinstance(augment, (tuple, list)) else [augment]
    shift, image = 0, None
    for part in parts:
        if part is None or part is False:
            continue
        if isinstance(part, ImageAugment):
            image = part if part else None
        elif isinstance(part, int) and not isinstance(part, bool) and part >= 0:
            shift = part
        else:
            raise UserError(f"augment must be a shift in pixels (an int >= 0), an ImageAugment or a pair "
                            f"of them, got {part!r}")
    return shift, image
