"""Optimizers (SGD, RMSprop, Adam, AdamW) over flat parameter buffers.

Why flat: a ``Sequential`` keeps every parameter in one contiguous buffer and every gradient
in another, each ``Parameter.data``/``.grad`` being a view into them.  When the optimizer
sees that, it updates the whole model with a handful of vectorised in-place NumPy operations
on two 1-D arrays instead of a Python loop over layers.  Parameters that are not laid out
like that still work: consecutive runs that do share a buffer become one *segment* each,
and every other parameter is a segment of its own (the per-parameter fallback).  The
results are bit-identical either way, because every operation is element-wise.

Optimizer state (momentum buffers, Adam moments, ...) is always one flat vector per buffer
over all parameters, in ``parameters()`` order, with per-segment views.  ``state_dict()`` is
therefore a small dict of numbers and 1-D arrays that ``np.savez`` can store and
``np.load(allow_pickle=False)`` can read back.

The update formulas follow PyTorch's ``torch.optim`` single-tensor (CPU) implementations
operation by operation -- same order, same bias corrections, same eps placement, same
first-step momentum initialisation -- so results agree with PyTorch to rounding (PyTorch's
vectorised kernels use fused multiply-adds in places, which NumPy cannot reproduce bit for
bit).  The caller's gradient buffers are never written: they are shared with the
communication layer, so weight decay and friends work on scratch copies.

Step counting: ``step_count`` is the number of completed ``step()`` calls.  A learning-rate
schedule sets ``opt.lr = schedule(opt.step_count)`` before each ``opt.step()``.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np

from distnet.errors import UserError

__all__ = ["OptimizerError", "Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "make_optimizer",
           "OPTIMIZER_NAMES"]


class OptimizerError(UserError, ValueError):
    """A bad hyper-parameter or a state dict that does not fit this optimizer.

    A ``ValueError`` (what callers of a numeric library expect) that is also a ``UserError``,
    so the command line reports it as one line instead of a traceback.
    """


# --------------------------------------------------------------------------- validation

def _number(name: str, value, lo: float | None = None, hi: float | None = None,
            hi_open: bool = False) -> float:
    """Return ``value`` as a float, or raise OptimizerError naming the argument."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise OptimizerError(f"invalid {name}: {value!r} is not a number") from None
    if not math.isfinite(x):
        raise OptimizerError(f"invalid {name}: {value!r} (must be finite)")
    if lo is not None and x < lo:
        raise OptimizerError(f"invalid {name}: {value!r} (must be >= {lo})")
    if hi is not None and (x >= hi if hi_open else x > hi):
        raise OptimizerError(f"invalid {name}: {value!r} (must be {'<' if hi_open else '<='} {hi})")
    return x


# --------------------------------------------------------------------------- segments

@dataclass
class _Segment:
    """One (data, grad) array pair the update runs on, covering ``[start, stop)`` of the
    flat parameter order.  ``data``/``grad`` are views of the caller's memory."""

    data: np.ndarray
    grad: np.ndarray
    start: int
    stop: int


def _root(a: np.ndarray) -> np.ndarray:
    """The array at the bottom of ``a``'s chain of views (the one owning the memory)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def _location(a: np.ndarray):
    """(root, element offset) if ``a`` is a C-contiguous stretch of a C-contiguous root of
    the same dtype -- i.e. if a 1-D slice of the root can stand in for it -- else None."""
    root = _root(a)
    if not a.flags.c_contiguous or not root.flags.c_contiguous or root.dtype != a.dtype:
        return None
    byte_offset = _address(a) - _address(root)
    if byte_offset < 0 or byte_offset % a.itemsize or byte_offset + a.nbytes > root.nbytes:
        return None
    return root, byte_offset // a.itemsize


def _follows(prev: np.ndarray, cur: np.ndarray) -> bool:
    """True if ``cur`` starts exactly where ``prev`` ends in the same contiguous buffer."""
    lp, lc = _location(prev), _location(cur)
    return (lp is not None and lc is not None and lp[0] is lc[0]
            and lp[1] + prev.size == lc[1])


def _span(first: np.ndarray, total: int) -> np.ndarray:
    """A 1-D view of ``total`` elements of ``first``'s root, starting where ``first`` does."""
    root, offset = _location(first)
    return root.reshape(-1)[offset:offset + total]


def _build_segments(params) -> list[_Segment]:
    """Group parameters into maximal runs whose data (and grads) are laid end to end.

    The Sequential case gives a single segment spanning ``flat_params``/``flat_grads``;
    independent arrays give one segment per parameter (using the arrays themselves, so
    even non-contiguous ones are updated in place).
    """
    runs: list[list] = []
    for p in params:
        if p.data.size == 0:
            continue  # nothing to update; an empty view has no meaningful address
        if runs and _follows(runs[-1][-1].data, p.data) and _follows(runs[-1][-1].grad, p.grad):
            runs[-1].append(p)
        else:
            runs.append([p])
    segments, start = [], 0
    for run in runs:
        n = sum(p.data.size for p in run)
        if len(run) == 1:
            data, grad = run[0].data, run[0].grad
        else:
            data, grad = _span(run[0].data, n), _span(run[0].grad, n)
        segments.append(_Segment(data, grad, start, start + n))
        start += n
    return segments


def _as_parameters(params) -> list:
    """Accept a list of Parameters or a module (anything with ``.parameters()``)."""
    if hasattr(params, "parameters"):
        params = params.parameters()
    params = list(params)
    if not params:
        raise OptimizerError("optimizer got an empty parameter list")
    seen = set()
    for i, p in enumerate(params):
        data, grad = getattr(p, "data", None), getattr(p, "grad", None)
        if not isinstance(data, np.ndarray) or not isinstance(grad, np.ndarray):
            raise OptimizerError(f"params[{i}] ({p!r}) needs numpy arrays .data and .grad")
        if data.shape != grad.shape:
            raise OptimizerError(f"params[{i}]: grad shape {grad.shape} != data shape {data.shape}")
        if not data.flags.writeable:
            raise OptimizerError(f"params[{i}]: .data is read-only")
        if id(p) in seen:
            raise OptimizerError(f"params[{i}] ({p!r}) appears more than once")
        seen.add(id(p))
    dtypes = {p.data.dtype for p in params} | {p.grad.dtype for p in params}
    if len(dtypes) != 1 or not np.issubdtype(next(iter(dtypes)), np.floating):
        raise OptimizerError(f"all parameters and gradients must share one floating dtype, "
                             f"got {sorted(str(d) for d in dtypes)}")
    return params


# --------------------------------------------------------------------------- base class

class Optimizer:
    """Base class: segments, flat state, ``step``/``zero_grad``/``state_dict``.

    Subclasses validate their hyper-parameters, call ``_allocate(buffer_names, scratch)``
    and implement ``_update(p, g, state, scratch, decay)``, which updates one segment in place:
    ``p``/``g`` are the segment's parameter and gradient arrays, ``state`` maps each buffer
    name to the matching view of the flat state, and ``scratch`` holds reusable work arrays
    of the same shape (so a step allocates nothing), ``decay`` is the weight decay: the
    scalar, or the segment's view of the per-element coefficients when a
    ``weight_decay_mask`` was given.  ``self.step_count`` is the number of
    steps completed *before* the current one.

    The optimizer binds to the parameters' arrays when it is built: update them in place
    (``model.flat_params[...] = saved``), do not rebind ``p.data``/``p.grad`` afterwards.
    """

    def __init__(self, params, lr: float):
        self.params = _as_parameters(params)
        self.lr = lr
        self.step_count = 0
        self.dtype = self.params[0].data.dtype
        self.numel = sum(p.data.size for p in self.params)
        self._segments = _build_segments(self.params)
        self._state: dict[str, np.ndarray] = {}
        self._bound: list[tuple[_Segment, dict, list, object]] = []
        self.weight_decay = 0.0
        self._decay = None  # per-element decay coefficients when a mask is given
        self._grad_factors = None  # per element, multiplied into the gradient: 0 = frozen, else an lr factor
        self._work: list[np.ndarray] = []

    def _set_weight_decay(self, weight_decay, mask) -> None:
        """Validate ``weight_decay`` and the optional ``weight_decay_mask``: a vector over
        the flat parameter order (``parameters()``, as ``optim.decay_mask`` builds it) of
        non-negative per-element factors, 0 to leave an element undecayed.  Without a mask
        the scalar path is kept, so results stay bit-identical to before masks existed."""
        self.weight_decay = _number("weight_decay", weight_decay, lo=0.0)
        if mask is None:
            self._decay = None
            return
        mask = np.asarray(mask)
        if mask.shape != (self.numel,):
            raise OptimizerError(f"weight_decay_mask has shape {mask.shape}, expected ({self.numel},) "
                                 f"for {self.numel} parameters")
        if not np.issubdtype(mask.dtype, np.number) and mask.dtype != bool:
            raise OptimizerError(f"weight_decay_mask must be numeric, got dtype {mask.dtype}")
        mask = mask.astype(np.float64)
        if not np.isfinite(mask).all() or (mask < 0).any():
            raise OptimizerError("weight_decay_mask must hold finite values >= 0")
        self._decay = (self.weight_decay * mask).astype(self.dtype)

    @property
    def lr(self) -> float:
        """Learning rate used by the next ``step()``; schedules assign it every step."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _number("lr", value, lo=0.0)

    @property
    def num_segments(self) -> int:
        """How many array pairs a step runs over: 1 for a Sequential's flat buffers."""
        return len(self._segments)

    def _allocate(self, names: tuple[str, ...], scratch: int) -> None:
        """Allocate flat zeroed state buffers and scratch space, and bind per-segment views
        once (``load_state_dict`` copies into the same arrays, so the views stay valid)."""
        self._state = {name: np.zeros(self.numel, dtype=self.dtype) for name in names}
        self._work = [np.empty(self.numel, dtype=self.dtype) for _ in range(scratch)]
        self._bind()

    def _bind(self) -> None:
        def view(flat, seg):
            return flat[seg.start:seg.stop].reshape(seg.data.shape)

        self._bound = [(seg, {k: view(v, seg) for k, v in self._state.items()},
                        [view(w, seg) for w in self._work],
                        self.weight_decay if self._decay is None else view(self._decay, seg),
                        None if self._grad_factors is None else (view(self._grad_factors, seg), view(self._masked_grad, seg)))
                       for seg in self._segments]

    def freeze(self, mask) -> None:
        """Never update the elements where ``mask`` (a vector over the flat parameter order,
        as ``optim.frozen_mask`` builds it) is true: they step as if their gradient were 0
        and get no weight decay, so they keep their value bit for bit (every optimizer here
        moves a parameter only through its gradient and its decay, and state started at 0
        stays 0).  Used to train BatchNorm without its scale (fixed at 1).  The caller's
        gradient buffer is not written: the masked gradient goes to a buffer of our own
        (one multiply over the flat buffer per step)."""
        mask = self._per_element("freeze mask", mask)
        keep = np.where(mask.astype(bool), 0, 1).astype(self.dtype)
        if self.weight_decay != 0:
            base = self._decay if self._decay is not None else np.full(self.numel, self.weight_decay, self.dtype)
            self._decay = base * keep
        self._set_gradient_factors(keep if self._grad_factors is None else self._grad_factors * keep)

    def scale_learning_rate(self, factors) -> None:
        """Give each element its own learning rate, ``lr * factors`` (a vector over the flat
        parameter order; weight decay is not scaled).  Only for SGD, with or without
        (Nesterov) momentum: its update is linear in the gradient, so scaling the gradient
        is scaling the rate -- for an adaptive optimizer it would change nothing.  Why: the
        fast CIFAR-10 recipes (airbench) train BatchNorm's shift at 64 times the rate of the
        weights, as a parameter group would in PyTorch; here it is the multiply ``freeze``
        already does each step, with factors other than 0 and 1."""
        if not isinstance(self, SGD):
            raise OptimizerError(f"per-parameter learning rates need SGD (with or without momentum), "
                                 f"not {type(self).__name__}")
        factors = self._per_element("learning-rate factors", factors).astype(np.float64)
        if not np.isfinite(factors).all() or (factors < 0).any():
            raise OptimizerError("learning-rate factors must be finite and >= 0")
        factors = factors.astype(self.dtype)
        self._set_gradient_factors(factors if self._grad_factors is None else self._grad_factors * factors)

    def _per_element(self, what, values) -> np.ndarray:
        values = np.asarray(values)
        if values.shape != (self.numel,):
            raise OptimizerError(f"{what} has shape {values.shape}, expected ({self.numel},) "
                                 f"for {self.numel} parameters")
        return values

    def _set_gradient_factors(self, factors) -> None:
        self._grad_factors = factors
        self._masked_grad = np.empty(self.numel, dtype=self.dtype)
        self._bind()

    def step(self) -> None:
        """Apply one update to every parameter using its current ``.grad``."""
        for seg, state, scratch, decay, masked in self._bound:
            g = seg.grad
            if masked is not None:
                g = np.multiply(g, masked[0], out=masked[1])
            self._update(seg.data, g, state, scratch, decay)
        self.step_count += 1

    def _update(self, p, g, state, scratch, decay) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Zero all gradients (one ``fill`` on the flat gradient buffer when there is one)."""
        for seg in self._segments:
            seg.grad.fill(0)

    def state_dict(self) -> dict:
        """``{"lr": float, "step": int, <buffer>: 1-D array copy, ...}`` -- only numbers and
        arrays, so ``np.savez`` / ``np.load(allow_pickle=False)`` round-trip it exactly."""
        out = {"lr": self.lr, "step": self.step_count}
        out.update({name: buf.copy() for name, buf in self._state.items()})
        return out

    def load_state_dict(self, state) -> None:
        """Restore a ``state_dict()`` (a dict or the NpzFile from ``np.load``) exactly.

        Everything is validated before anything is changed, so a bad state leaves the
        optimizer as it was.
        """
        expected = {"lr", "step", *self._state}
        got = set(state.keys())
        if got != expected:
            missing, extra = sorted(expected - got), sorted(got - expected)
            raise OptimizerError(
                f"{type(self).__name__} state mismatch: missing keys {missing}, unexpected "
                f"keys {extra} (was it saved by a different optimizer or configuration?)")
        lr = _number("lr in state", _scalar(state, "lr"), lo=0.0)
        step = _scalar(state, "step")
        if isinstance(step, float) and step.is_integer():
            step = int(step)
        try:
            step = operator.index(step)
        except TypeError:
            raise OptimizerError(f"invalid step in state: {step!r} (must be an integer)") from None
        if step < 0:
            raise OptimizerError(f"invalid step in state: {step} (must be >= 0)")
        arrays = {}
        for name in self._state:
            value = np.asarray(state[name])
            if value.shape != (self.numel,):
                raise OptimizerError(f"state buffer {name!r} has shape {value.shape}, expected "
                                     f"({self.numel},) for {self.numel} parameters")
            if not np.issubdtype(value.dtype, np.floating):
                raise OptimizerError(f"state buffer {name!r} has dtype {value.dtype}, "
                                     f"expected floating point")
            arrays[name] = value
        for name, value in arrays.items():
            np.copyto(self._state[name], value, casting="same_kind")
        self.lr, self.step_count = lr, step

    def __repr__(self):
        return (f"{type(self).__name__}(lr={self.lr:g}, params={self.numel}, "
                f"segments={self.num_segments}, step={self.step_count})")


def _scalar(state, key: str):
    """``state[key]`` as a Python number (np.load gives 0-d arrays)."""
    value = np.asarray(state[key])
    if value.size != 1:
        raise OptimizerError(f"invalid {key} in state: expected a single number, got shape "
                             f"{value.shape}")
    return value.item()


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float, tmp: np.ndarray) -> None:
    """``start.lerp_(end, weight)`` as PyTorch computes it (two formulas, chosen by weight,
    for accuracy), in place, using ``tmp`` as work space."""
    np.subtract(end, start, out=tmp)
    if abs(weight) < 0.5:
        tmp *= weight
        start += tmp  # start + weight * (end - start)
    else:
        tmp *= 1.0 - weight
        np.subtract(end, tmp, out=start)  # end - (end - start) * (1 - weight)


# --------------------------------------------------------------------------- optimizers

class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum / Nesterov / L2 weight decay.

    As ``torch.optim.SGD``::

        d = g + weight_decay * p
        buf = d                                   (first step)
        buf = momentum * buf + (1 - dampening) * d (later steps)
        d = d + momentum * buf   if nesterov   else   d = buf
        p = p - lr * d
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, dampening: float = 0.0, weight_decay_mask=None):
        super().__init__(params, lr)
        self.momentum = _number("momentum", momentum, lo=0.0)
        self.dampening = _number("dampening", dampening, lo=0.0, hi=1.0)
        self._set_weight_decay(weight_decay, weight_decay_mask)
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise OptimizerError("nesterov requires momentum > 0 and dampening = 0 "
                                 f"(got momentum={momentum!r}, dampening={dampening!r})")
        names = ("momentum_buffer",) if self.momentum != 0 else ()
        scratch = 2 if self.weight_decay != 0 else 1  # scratch[0] holds d = g + wd * p
        self._allocate(names, scratch)

    def _update(self, p, g, state, scratch, decay):
        d = g
        if self.weight_decay != 0:
            d = np.multiply(p, decay, out=scratch[0])
            d += g
        if self.momentum != 0:
            buf = state["momentum_buffer"]
            if self.step_count == 0:
                np.copyto(buf, d)  # PyTorch: buffer = gradient on the first step, undamped
            else:
                buf *= self.momentum
                if self.dampening != 0:
                    buf += np.multiply(d, 1.0 - self.dampening, out=scratch[-1])
                else:
                    buf += d
            if self.nesterov:
                d = np.add(d, np.multiply(buf, self.momentum, out=scratch[-1]), out=scratch[-1])
            else:
                d = buf
        p -= np.multiply(d, self.lr, out=scratch[-1])


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``::

        d = g + weight_decay * p
        v = alpha * v + (1 - alpha) * d * d
        centered:  m = lerp(m, d, 1 - alpha);  avg = sqrt(v - m * m) + eps
        otherwise: avg = sqrt(v) + eps
        momentum > 0: buf = momentum * buf + d / avg;  p = p - lr * buf
        otherwise:    p = p - lr * d / avg

    Note eps is added *outside* the square root, and the momentum buffer starts at zero.
    """

    def __init__(self, params, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, weight_decay: float = 0.0, centered: bool = False,
                 weight_decay_mask=None):
        super().__init__(params, lr)
        self.alpha = _number("alpha", alpha, lo=0.0, hi=1.0, hi_open=True)
        self.eps = _number("eps", eps, lo=0.0)
        self.momentum = _number("momentum", momentum, lo=0.0)
        self._set_weight_decay(weight_decay, weight_decay_mask)
        self.centered = bool(centered)
        names = ("square_avg",) + (("grad_avg",) if self.centered else ()) \
            + (("momentum_buffer",) if self.momentum > 0 else ())
        self._allocate(names, scratch=2)

    def _update(self, p, g, state, scratch, decay):
        d = g
        if self.weight_decay != 0:
            d = np.multiply(p, decay, out=scratch[0])
            d += g
        v, avg = state["square_avg"], scratch[1]
        v *= self.alpha
        np.multiply(d, 1.0 - self.alpha, out=avg)  # PyTorch's addcmul: ((1 - alpha) * d) * d
        avg *= d
        v += avg
        if self.centered:
            m = state["grad_avg"]
            _lerp_(m, d, 1.0 - self.alpha, tmp=avg)
            np.multiply(m, m, out=avg)
            np.subtract(v, avg, out=avg)
            np.sqrt(avg, out=avg)
        else:
            np.sqrt(v, out=avg)
        avg += self.eps
        if self.momentum > 0:
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += np.divide(d, avg, out=avg)
            p -= np.multiply(buf, self.lr, out=avg)
        else:
            upd = np.multiply(d, self.lr, out=scratch[0])  # d may be scratch[0]: element-wise, fine
            upd /= avg
            p -= upd


class Adam(Optimizer):
    """Adam with L2 weight decay added to the gradient, as ``torch.optim.Adam``::

        t = step_count + 1
        d = g + weight_decay * p
        m = lerp(m, d, 1 - beta1)                  (= beta1 * m + (1 - beta1) * d)
        v = beta2 * v + (1 - beta2) * d * d
        denom = sqrt(v) / sqrt(1 - beta2**t) + eps
        p = p - (lr / (1 - beta1**t)) * m / denom
    """

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, weight_decay_mask=None):
        super().__init__(params, lr)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise OptimizerError(f"invalid betas: {betas!r} (must be a pair)") from None
        self.betas = (_number("betas[0]", beta1, lo=0.0, hi=1.0, hi_open=True),
                      _number("betas[1]", beta2, lo=0.0, hi=1.0, hi_open=True))
        self.eps = _number("eps", eps, lo=0.0)
        self._set_weight_decay(weight_decay, weight_decay_mask)
        self._allocate(("exp_avg", "exp_avg_sq"), scratch=2)

    def _update(self, p, g, state, scratch, decay):
        beta1, beta2 = self.betas
        t = self.step_count + 1
        d = g
        if self.weight_decay != 0:
            if self.decoupled:
                if self._decay is None:
                    p *= 1.0 - self.lr * self.weight_decay
                else:  # p * (1 - lr * wd_i), element by element
                    p -= np.multiply(np.multiply(p, decay, out=scratch[0]), self.lr, out=scratch[0])
            else:
                d = np.multiply(p, decay, out=scratch[0])
                d += g
        m, v, work = state["exp_avg"], state["exp_avg_sq"], scratch[1]
        _lerp_(m, d, 1.0 - beta1, tmp=work)
        v *= beta2
        np.multiply(d, 1.0 - beta2, out=work)  # PyTorch's addcmul: ((1 - beta2) * d) * d
        work *= d
        v += work
        step_size = self.lr / (1.0 - beta1 ** t)
        denom = np.sqrt(v, out=work)
        denom /= (1.0 - beta2 ** t) ** 0.5
        denom += self.eps
        upd = np.multiply(m, step_size, out=scratch[0])  # d (maybe scratch[0]) is done with
        upd /= denom
        p -= upd


class AdamW(Adam):
    """Adam with decoupled weight decay, as ``torch.optim.AdamW``: before the Adam update
    (which then uses the raw gradient), ``p = p * (1 - lr * weight_decay)``."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, weight_decay_mask=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         weight_decay_mask=weight_decay_mask)


# --------------------------------------------------------------------------- factory

OPTIMIZER_NAMES = ("sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw")


def make_optimizer(name: str, params, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0, decay_exclude=None, freeze=None,
                   bn_bias_lr_scale: float = 1.0) -> Optimizer:
    """Build an optimizer by name (e.g. from a command-line flag).

    ``sgd`` is plain SGD, ``momentum`` SGD with ``momentum``, ``nesterov`` SGD with Nesterov
    ``momentum``; ``momentum`` is ignored by the others (``rmsprop``, ``adam``, ``adamw``
    use their PyTorch defaults).  ``weight_decay`` is passed to all of them (L2 for SGD,
    RMSprop and Adam, decoupled for AdamW).  ``decay_exclude`` ("bn", "bias", "bn-bias" or
    None/"none") leaves those parameters of the model ``params`` out of the decay (see
    ``optim.decay``); ``freeze`` ("bn-scale" or None) keeps those parameters at their
    initial values (``Optimizer.freeze``); ``bn_bias_lr_scale`` multiplies the learning
    rate of BatchNorm's shift (``Optimizer.scale_learning_rate``; SGD only).
    """
    opt = _make(name, params, lr, momentum, weight_decay, decay_exclude)
    if freeze is not None and str(freeze).lower() != "none":
        from distnet.optim.decay import frozen_mask
        mask = frozen_mask(params, freeze)
        if not mask.any():
            raise OptimizerError(f"nothing to freeze: the model has no {freeze} parameters")
        opt.freeze(mask)
    if bn_bias_lr_scale != 1.0:
        from distnet.optim.decay import bn_bias_factors
        opt.scale_learning_rate(bn_bias_factors(params, bn_bias_lr_scale))
    return opt


def _make(name, params, lr, momentum, weight_decay, decay_exclude) -> Optimizer:
    key = str(name).lower()
    mask = None
    if decay_exclude is not None:
        from distnet.optim.decay import decay_mask, parse_exclude
        if parse_exclude(decay_exclude):
            mask = decay_mask(params, decay_exclude)
    kw = {} if mask is None else {"weight_decay_mask": mask}
    if key == "sgd":
        return SGD(params, lr, weight_decay=weight_decay, **kw)
    if key == "momentum":
        return SGD(params, lr, momentum=momentum, weight_decay=weight_decay, **kw)
    if key == "nesterov":
        return SGD(params, lr, momentum=momentum, nesterov=True, weight_decay=weight_decay, **kw)
    if key == "rmsprop":
        return RMSprop(params, lr, weight_decay=weight_decay, **kw)
    if key == "adam":
        return Adam(params, lr, weight_decay=weight_decay, **kw)
    if key == "adamw":
        return AdamW(params, lr, weight_decay=weight_decay, **kw)
    raise OptimizerError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZER_NAMES)}")
