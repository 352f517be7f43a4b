"""A scaling model: predicted step time, images/s and efficiency of distnet on W nodes.

``python -m distnet.bench --predict --nodes 8,32,128,512 --bandwidth 10Gbit --latency 5us``
(bench's ``__main__`` hands ``--predict`` to :func:`main` here; call ``scaling.main(argv)`` from Python)

Why a model: all that can be measured here is three containers on two shared cores. A
data-parallel step is ``compute(per-rank batch) + allreduce(flat gradient) + small
collectives``; the compute part is measured (``distnet.bench``'s training step at several
per-rank batch sizes, fitted as ``a + b * batch``), the communication part is the
latency-bandwidth-reduction ("alpha-beta-gamma", Hockney plus a reduction term) cost of the
algorithm MPICH really runs for that message, with alpha, beta and gamma calibrated from timed
ping-pongs and reductions (``benchmarks/calibrate_links.py``).

Which allreduce MPICH runs (MPICH 5.0.2, the ``mpich`` wheel distnet installs; read from the
selection JSON compiled into its libmpi, ``strings libmpi.so.12 | grep collective=allreduce``,
the same tree as ``src/mpi/coll/coll_selection.json`` in pmodels/mpich):

* The ch4 device first picks a *composition* (``MPIDI_Allreduce_intra_composition_*``): all
  ranks on one node -> gamma (shared memory only, the POSIX ``release_gather`` allreduce);
  several nodes with a node hierarchy and a commutative op -> alpha (reduce inside each node
  over shared memory, allreduce among one leader per node over the netmod, bcast inside the
  node); otherwise beta (the netmod's allreduce over all ranks). With one rank per node the
  node steps are empty and all three are the netmod allreduce among the nodes.
* The netmod (ofi; ucx alike) falls back to MPIR's own algorithms (``ofi_coll.h``: the
  default case is ``MPIR_Allreduce_impl``), selected by the MPIR JSON: a message of at most
  8 bytes, a user-defined op, or ``count < pof2`` (pof2 = the largest power of two <= p) ->
  recursive doubling; otherwise Rabenseifner's reduce-scatter (recursive halving) + allgather
  (recursive doubling). Note the 8 bytes: the old ``MPIR_CVAR_ALLREDUCE_SHORT_MSG_SIZE`` (2048)
  is no longer what the default JSON tests; Iallreduce (``--overlap``) still switches at 2048.
* Costs (Thakur, Rabenseifner and Gropp, "Optimization of Collective Communication Operations
  in MPICH", IJHPCA 19(1), 2005; the same formulas head MPICH's
  ``allreduce_intra_reduce_scatter_allgather.c``), n bytes, p' = pof2:
  recursive doubling ``lg p' (alpha + n beta + n gamma)``; Rabenseifner
  ``2 lg p' alpha + 2 (p'-1)/p' n beta + (p'-1)/p' n gamma``. A non-power-of-two p first folds
  the 2(p - p') lowest ranks pairwise (the even one sends its whole vector to its odd
  neighbour, which reduces: ``alpha + n beta + n gamma``) and at the end sends the result
  back (``alpha + n beta``); both algorithms do this.

What the model does not know (README, "A scaling model"): switch contention and
oversubscribed fabrics, NUMA and multi-rail NICs, stragglers and OS noise, PPN > 1 sharing one
NIC (modelled only roughly, below), and anything beyond the node counts that were measured.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field

from .cli._common import Parser

# --- what MPICH 5.0.2 selects ---------------------------------------------------------------
SHORT_MSG_BYTES = 8          # MPIR JSON: "avg_msg_size<=8" -> recursive doubling
IALLREDUCE_SHORT_MSG_BYTES = 2048  # MPIR JSON for iallreduce: "avg_msg_size<=2048"
STATS_COUNT = 4              # the Trainer's per-step float64 [loss, correct, count, stop]


class ScalingError(ValueError):
    """Bad input to the model; the CLI prints ``distnet: error: <flag>: <message>``."""

    def __init__(self, flag: str, message: str):
        super().__init__(f"{flag}: {message}")
        self.flag = flag


def pof2_floor(p: int) -> int:
    """The largest power of two <= p (MPICH's ``comm_ptr->pof2``)."""
    if p < 1:
        raise ValueError(f"a communicator has at least one rank, got {p}")
    return 1 << (p.bit_length() - 1)


@dataclass(frozen=True)
class Link:
    """alpha: seconds per message; beta: seconds per byte; gamma: seconds per reduced byte."""
    alpha: float
    beta: float
    gamma: float = 0.0
    name: str = ""


def _fold_cost(p: int, nbytes: float, link: Link) -> float:
    """The non-power-of-two pre- and post-steps both MPICH algorithms add."""
    if p == pof2_floor(p):
        return 0.0
    pre = link.alpha + nbytes * link.beta + nbytes * link.gamma
    post = link.alpha + nbytes * link.beta
    return pre + post


def recursive_doubling_time(p: int, nbytes: float, link: Link) -> float:
    """MPIR_Allreduce_intra_recursive_doubling: lg p' exchanges of the whole vector."""
    if p == 1:
        return 0.0
    lg = math.log2(pof2_floor(p))
    return lg * (link.alpha + nbytes * link.beta + nbytes * link.gamma) + _fold_cost(p, nbytes, link)


def rabenseifner_time(p: int, nbytes: float, link: Link) -> float:
    """MPIR_Allreduce_intra_reduce_scatter_allgather (Rabenseifner)."""
    if p == 1:
        return 0.0
    q = pof2_floor(p)
    lg = math.log2(q)
    frac = (q - 1) / q
    core = 2 * lg * link.alpha + 2 * frac * nbytes * link.beta + frac * nbytes * link.gamma
    return core + _fold_cost(p, nbytes, link)


def mpich_allreduce_algorithm(p: int, nbytes: float, count: int, builtin_op: bool = True,
                              nonblocking: bool = False) -> str:
    """The MPIR algorithm MPICH 5.0.2's default selection runs: 'none' (p == 1),
    'recursive_doubling' or 'rabenseifner'."""
    if p == 1 or count == 0:
        return "none"
    short = IALLREDUCE_SHORT_MSG_BYTES if nonblocking else SHORT_MSG_BYTES
    if nbytes <= short or not builtin_op or count < pof2_floor(p):
        return "recursive_doubling"
    return "rabenseifner"


def allreduce_time(p: int, nbytes: float, count: int, link: Link, builtin_op: bool = True,
                   nonblocking: bool = False) -> tuple[float, str]:
    """(seconds, algorithm) of one MPI_Allreduce of ``count`` elements (``nbytes``) over p ranks."""
    algorithm = mpich_allreduce_algorithm(p, nbytes, count, builtin_op, nonblocking)
    if algorithm == "none":
        return 0.0, algorithm
    if algorithm == "recursive_doubling":
        return recursive_doubling_time(p, nbytes, link), algorithm
    return rabenseifner_time(p, nbytes, link), algorithm


def hierarchical_allreduce_time(nodes: int, ppn: int, nbytes: float, count: int, net: Link, shm: Link,
                                builtin_op: bool = True, nonblocking: bool = False) -> tuple[float, str]:
    """MPICH ch4 composition alpha for ``ppn`` ranks per node: reduce inside the node, allreduce
    among the node leaders over the network, bcast inside the node.

    The node steps are modelled as binomial trees over shared memory (ceil(lg ppn) steps of the
    whole vector each way); MPICH's release_gather is a k-ary tree with a pipelined copy, so
    this is a rough upper bound, and it ignores that ppn ranks share one NIC (they do not
    here: only the leader talks to the network)."""
    if ppn < 1 or nodes < 1:
        raise ValueError("nodes and ppn must be >= 1")
    inter, algorithm = allreduce_time(nodes, nbytes, count, net, builtin_op, nonblocking)
    if ppn == 1:
        return inter, algorithm
    steps = math.ceil(math.log2(ppn))
    reduce = steps * (shm.alpha + nbytes * shm.beta + nbytes * shm.gamma)
    bcast = steps * (shm.alpha + nbytes * shm.beta)
    label = f"shm reduce + {algorithm} + shm bcast" if nodes > 1 else "shm reduce + bcast"
    return reduce + inter + bcast, label


# --- --compress fp16: alltoall + allgather of float16 chunks (distnet/distributed/compress.py) --
# It never asks MPI to sum float16: an (I)alltoall sends chunk q of every rank to rank q, which
# sums in float32 and an (I)allgather shares the sums. MPICH 5.0.2's selection (the same JSON):
# ialltoall, p < 8: per-destination <= 32768 B -> permuted sendrecv, else pairwise; p >= 8:
# <= 2048 B -> Bruck, <= 32768 B -> permuted sendrecv, else pairwise. iallgather: p a power of
# two and total < 524288 B -> recursive doubling, else ring; other p: total < 81920 B -> Bruck,
# else ring.
FP16_SCALE_BYTES = 4  # each chunk carries its float32 scale (two uint16 words)


def alltoall_time(p: int, per_dest_bytes: float, link: Link) -> tuple[float, str]:
    if p == 1:
        return 0.0, "none"
    if p >= 8 and per_dest_bytes <= 2048:  # Bruck: ceil(lg p) rounds of about half the data
        return math.ceil(math.log2(p)) * (link.alpha + per_dest_bytes * p / 2 * link.beta), "bruck"
    name = "permuted_sendrecv" if per_dest_bytes <= 32768 else "pairwise"
    return (p - 1) * (link.alpha + per_dest_bytes * link.beta), name


def allgather_time(p: int, total_bytes: float, link: Link) -> tuple[float, str]:
    if p == 1:
        return 0.0, "none"
    volume = (p - 1) / p * total_bytes * link.beta
    if p == pof2_floor(p) and total_bytes < 524288:
        return math.log2(p) * link.alpha + volume, "recursive_doubling"
    if p != pof2_floor(p) and total_bytes < 81920:
        return math.ceil(math.log2(p)) * link.alpha + volume, "bruck"
    return (p - 1) * link.alpha + volume, "ring"


def fp16_reduce_time(p: int, count: int, link: Link) -> tuple[float, str]:
    """Wire time of compress.py's two collectives for ``count`` gradient values on p ranks."""
    if p == 1:
        return 0.0, "none"
    chunk_bytes = 2 * math.ceil(count / p) + FP16_SCALE_BYTES
    t1, a1 = alltoall_time(p, chunk_bytes, link)
    t2, a2 = allgather_time(p, p * chunk_bytes, link)
    # the owner's float32 sum of p chunks: (p - 1) additions of a chunk, like an allreduce's gamma
    t3 = (p - 1) * math.ceil(count / p) * 4 * link.gamma
    return t1 + t2 + t3, f"fp16 alltoall({a1}) + allgather({a2})"


# --- compute ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Compute:
    """Seconds of one training step (forward, loss, backward, update) on one rank at per-rank
    batch b: ``intercept + per_sample * b``; ``backward_share`` of it is backward (for overlap)."""
    intercept: float
    per_sample: float
    backward_share: float = 0.6
    samples: tuple = ()
    fp16_codec_s: float = 0.0  # --compress fp16's encode/decode/residual work per step (measured)

    def step(self, batch: float) -> float:
        return self.intercept + self.per_sample * batch if batch > 0 else self.intercept


def fit_line(xs, ys, relative: bool = True) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y = a + b x; with ``relative`` each point is weighted
    by 1/y so that small x (latency) counts as much as large x (bandwidth)."""
    xs, ys = [float(x) for x in xs], [float(y) for y in ys]
    if len(xs) < 2 or len(set(xs)) < 2:
        raise ValueError("a line needs at least two distinct x values")
    ws = [1.0 / (y * y) if relative and y > 0 else 1.0 for y in ys]
    sw = sum(ws)
    mx = sum(w * x for w, x in zip(ws, xs)) / sw
    my = sum(w * y for w, y in zip(ws, ys)) / sw
    sxx = sum(w * (x - mx) ** 2 for w, x in zip(ws, xs))
    sxy = sum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys))
    slope = sxy / sxx
    return my - slope * mx, slope


def fit_link(pingpong, reduce_local=None, name: str = "", large_from: float = 1 / 16,
             small_upto: int = 2048) -> Link:
    """alpha, beta from one-way ping-pong times [(bytes, seconds)], gamma from local reduction
    times [(bytes, seconds)].

    Two regimes, as a Hockney fit is usually done: beta is the least-squares slope over the
    large messages (>= ``large_from`` of the largest size), the ones a gradient allreduce
    sends; alpha is the intercept of a line through the small ones (<= ``small_upto`` bytes). One straight line through every size would let a token-bucket shaper (tc tbf,
    which passes its burst of 64 KiB at line rate) or eager/rendezvous protocol switches bend
    beta by an order of magnitude (seen: 2.2 Gbit/s fitted on a 100 Mbit/s link). gamma is the
    slope of the local reduction (its call overhead is not per byte)."""
    pts = sorted((float(n), float(t)) for n, t in pingpong)
    if len(pts) < 3:
        raise ValueError("a link fit needs ping-pong times at three or more sizes")
    largest = pts[-1][0]
    large = [(n, t) for n, t in pts if n >= largest * large_from]
    if len(large) < 2:
        large = pts[-2:]
    _, beta = fit_line([n for n, _ in large], [t for _, t in large], relative=False)
    if beta <= 0:  # noise flattened the large sizes: the largest message's own time per byte
        beta = pts[-1][1] / pts[-1][0]
    small = [(n, t) for n, t in pts if n <= small_upto]
    if len(small) >= 2:
        alpha, _ = fit_line([n for n, _ in small], [t for _, t in small])
    else:
        alpha = pts[0][1] - pts[0][0] * beta
    alpha = max(alpha, 0.0)
    gamma = 0.0
    if reduce_local:
        _, gamma = fit_line([n for n, _ in reduce_local], [t for _, t in reduce_local], relative=False)
    return Link(alpha, beta, max(gamma, 0.0), name)


# --- parsing ------------------------------------------------------------------------------
_BITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


def parse_bandwidth(text: str) -> float:
    """'10Gbit', '100Mbit', '1gbit', '25gbit/s' (bits) or '1.25GB/s' (bytes) -> bytes per second."""
    s = str(text).strip()
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgGtT]?)(bit|Bit|BIT|b|B)(?:/s|ps)?", s)
    if not m:
        raise ScalingError("--bandwidth", f"expected a rate such as 10Gbit, 100Mbit or 1.25GB/s, got {text!r}")
    value = float(m[1]) * _BITS[m[2].lower()]
    if m[3] != "B":
        value /= 8.0
    if not value > 0 or math.isinf(value):
        raise ScalingError("--bandwidth", f"must be positive, got {text!r}")
    return value


def parse_latency(text: str) -> float:
    """'5us', '0.5ms', '800ns', '1e-6s' -> seconds (a one-way, per-message latency: alpha)."""
    s = str(text).strip()
    m = re.fullmatch(r"(\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)\s*(ns|us|µs|ms|s)", s)
    if not m:
        raise ScalingError("--latency", f"expected a time such as 5us, 0.5ms or 800ns, got {text!r}")
    value = float(m[1]) * _SECONDS[m[2]]
    if math.isinf(value) or value < 0:
        raise ScalingError("--latency", f"must be finite and >= 0, got {text!r}")
    return value


def parse_nodes(text: str) -> list[int]:
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ScalingError("--nodes", f"expected positive integers separated by commas, got {text!r}")
        out.append(int(part))
    if not out:
        raise ScalingError("--nodes", "give at least one node count, e.g. 8,32,128")
    return out


def parse_positive_int(flag: str, text) -> int:
    try:
        value = int(str(text))
    except ValueError:
        raise ScalingError(flag, f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise ScalingError(flag, f"must be >= 1, got {value}")
    return value


# --- the model's inputs: gradient and collective sizes of a named model ------------------------
@dataclass
class ModelComms:
    grad_count: int                     # elements of the flat gradient buffer
    grad_itemsize: int = 4              # float32
    batchnorm_channels: list = field(default_factory=list)  # C of each BatchNorm layer
    layer_sizes: list = field(default_factory=list)          # parameters per layer, in order


def model_comms(name: str) -> ModelComms:
    """Sizes of what a step of ``name`` reduces (built once; numbers only, no timing)."""
    from . import nn
    from .bench import INPUT_SHAPES

    shape = INPUT_SHAPES.get(name, (3, 32, 32))
    model = nn.build_model(name, shape, 10)
    bn = [m.num_features for m in model.modules() if hasattr(m, "stat_reducer")] \
        if hasattr(model, "modules") else [l.num_features for l in model.layers if hasattr(l, "stat_reducer")]
    sizes = [sum(p.size for p in layer.parameters()) for layer in model.layers]
    return ModelComms(int(model.flat_grads.size), int(model.flat_grads.itemsize), bn, sizes)


def buckets(layer_sizes, itemsize: int, bucket_bytes: int) -> list[int]:
    """Element counts of GradientSync's overlap buckets (last layer first, >= bucket_bytes each)."""
    out, current = [], 0
    for size in reversed(layer_sizes):
        if size == 0:
            continue
        current += size
        if current * itemsize >= bucket_bytes:
            out.append(current)
            current = 0
    if current:
        out.append(current)
    return out


# --- the prediction -----------------------------------------------------------------------
@dataclass
class Setting:
    nodes: int
    ppn: int = 1
    global_batch: int | None = 128
    per_rank_batch: int | None = None   # weak scaling instead of a fixed global batch
    compress: str = "none"              # "fp16": float16 gradients (half the bytes, builtin SUM)
    overlap: bool = False
    bucket_bytes: int = 1 << 20
    cores_per_node: float | None = None  # None: every rank has a core of its own
    shared_cores: float | None = None    # all ranks of the job share this many cores (one machine)


def predict(setting: Setting, comms: ModelComms, compute: Compute, net: Link, shm: Link | None = None) -> dict:
    """One row of the prediction: seconds of compute and communication per step, images/s,
    and the parallel efficiency against one rank doing the same global batch alone."""
    shm = shm or net
    w = setting.nodes * setting.ppn
    if setting.per_rank_batch is not None:
        per_rank = setting.per_rank_batch
        global_batch = per_rank * w
    else:
        global_batch = setting.global_batch
        per_rank = math.ceil(global_batch / w)  # the largest contiguous slice sets the pace
    # CPU sharing: ranks beyond the cores they have wait for a core
    share = 1.0
    if setting.shared_cores:
        share = max(1.0, w / setting.shared_cores)
    elif setting.cores_per_node:
        share = max(1.0, setting.ppn / setting.cores_per_node)
    compute_s = compute.step(per_rank) * share

    itemsize = 2 if setting.compress == "fp16" else comms.grad_itemsize
    count = comms.grad_count
    nbytes = count * itemsize

    def reduce(nb, cnt, nonblocking=False):
        return hierarchical_allreduce_time(setting.nodes, setting.ppn, nb, cnt, net, shm,
                                           nonblocking=nonblocking)

    def grads(cnt, nonblocking=False):
        if setting.compress == "fp16":  # over all w ranks (compress.py uses the whole communicator)
            return fp16_reduce_time(w, cnt, net if setting.nodes > 1 else shm)
        return reduce(cnt * itemsize, cnt, nonblocking)

    if setting.overlap and w > 1:
        # buckets are planned on the float32 buffer (GradientSync's bucket_bytes)
        sizes = buckets(comms.layer_sizes, comms.grad_itemsize, setting.bucket_bytes) or [count]
        times = [grads(c, nonblocking=True) for c in sizes]
        grad_s = sum(t for t, _ in times)
        algorithm = times[-1][1]
        # at most what runs while backward still works: every bucket but the last (it is
        # ready only when backward ends), and never more than the backward time itself
        hidden = min(sum(t for t, _ in times[:-1]), compute_s * compute.backward_share)
    else:
        grad_s, algorithm = grads(count)
        hidden = 0.0
    codec_s = compute.fp16_codec_s if setting.compress == "fp16" and w > 1 else 0.0
    compute_s += codec_s  # encode/decode/error feedback: CPU time on the critical path
    stats_s, _ = reduce(STATS_COUNT * 8, STATS_COUNT)
    bn_s = sum(reduce((2 * c + 1) * 8, 2 * c + 1)[0] + reduce(2 * c * 8, 2 * c)[0]
               for c in comms.batchnorm_channels)
    comm_s = grad_s - hidden + stats_s + bn_s
    step_s = compute_s + comm_s
    images = global_batch / step_s
    if setting.per_rank_batch is not None:  # weak scaling: against one rank at the same batch
        efficiency = compute.step(per_rank) / step_s
    else:  # strong scaling: against one rank doing the whole global batch
        efficiency = compute.step(global_batch) / (w * step_s)
    return {"nodes": setting.nodes, "ranks": w, "per_rank_batch": per_rank, "global_batch": global_batch,
            "compute_s": compute_s, "comm_s": comm_s, "grad_allreduce_s": grad_s, "hidden_s": hidden,
            "stats_s": stats_s, "batchnorm_s": bn_s, "step_s": step_s, "images_per_s": images,
            "efficiency": efficiency, "algorithm": algorithm, "grad_bytes": nbytes, "cpu_share": share,
            "fp16_codec_s": codec_s}


# --- calibration files ----------------------------------------------------------------------
DEFAULT_CALIBRATION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                   "benchmarks", "results", "calibration.json")


def load_calibration(path: str) -> dict:
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ScalingError("--calibration", f"{path}: no such file (run benchmarks/calibrate_links.py, "
                                            f"or give --bandwidth/--latency and --compute)") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ScalingError("--calibration", f"{path}: not a calibration JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("links", {}), dict):
        raise ScalingError("--calibration", f"{path}: expected an object with 'links' and 'compute'")
    return doc


def link_from(doc: dict, name: str) -> Link:
    try:
        entry = doc["links"][name]
        return Link(float(entry["alpha"]), float(entry["beta"]), float(entry.get("gamma", 0.0)), name)
    except (KeyError, TypeError, ValueError):
        known = ", ".join(sorted(doc.get("links", {}))) or "none"
        raise ScalingError("--link", f"no link {name!r} in the calibration (it has: {known})") from None


def compute_from(doc: dict, model: str) -> Compute:
    try:
        entry = doc["compute"][model]
        pts = [(float(b), float(t)) for b, t in entry["samples"]]
    except (KeyError, TypeError, ValueError):
        known = ", ".join(sorted(doc.get("compute", {}))) or "none"
        raise ScalingError("--model", f"no compute measurement of {model!r} in the calibration "
                                      f"(it has: {known}; run benchmarks/calibrate_links.py --compute {model})") from None
    a, b = fit_line([p[0] for p in pts], [p[1] for p in pts])
    return Compute(max(a, 0.0), b, float(entry.get("backward_share", 0.6)), tuple(pts),
                   float(entry.get("fp16_codec_s", 0.0)))


def measure_compute(model: str, batch_sizes, seconds: float = 1.0) -> dict:
    """Seconds per training step at each per-rank batch (distnet.bench's step), and the share
    of it that is backward + update (for --overlap)."""
    import time

    from .bench import make_step, measure

    samples, shares = [], []
    for b in batch_sizes:
        r = measure(make_step(model, b), b, seconds)
        samples.append([b, b / r["images_per_s"]])
        step = make_step(model, b)
        fwd = _forward_only(model, b)
        t0 = time.perf_counter(); step(); step(); full = time.perf_counter() - t0
        t0 = time.perf_counter(); fwd(); fwd(); f = time.perf_counter() - t0
        shares.append(max(0.0, min(1.0, 1 - f / full)))
    shares.sort()
    out = {"samples": samples, "backward_share": shares[len(shares) // 2]}
    codec = measure_fp16_codec(model_comms(model).grad_count)
    if codec is not None:
        out["fp16_codec_s"] = codec
    return out


def measure_fp16_codec(count: int, seconds: float = 0.5):
    """CPU seconds per step of --compress fp16's own work on ``count`` values, or None where
    distnet.distributed.compress is not there: the residual add, encode and residual update of
    step 1, the decode and sum of the owned chunk and its encode in step 2 (about one more pass
    over the values, summed over the ranks' chunks), and the final decode."""
    try:
        from .distributed.compress import _SCALE_WORDS, decode, encode
    except ImportError:
        return None
    import time

    import numpy as np

    rng = np.random.default_rng(0)
    grads = (rng.standard_normal(count) * 1e-4).astype(np.float32)
    residual = np.zeros_like(grads)
    rows = np.empty((1, count), dtype=np.float32)
    words = np.empty((1, _SCALE_WORDS + count), dtype=np.uint16)

    def one_step():
        np.add(grads, residual, out=rows[0])
        sent = encode(rows, words)
        np.subtract(rows[0], sent.reshape(-1)[:count], out=residual)
        summed = decode(words, np.float32).sum(axis=0)
        encode(summed[None], words)
        decode(words, np.float32)

    one_step()
    reps, t0 = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - t0 < seconds:
        one_step()
        reps += 1
    return (time.perf_counter() - t0) / reps


def _forward_only(model_name: str, batch: int):
    import numpy as np

    from . import nn
    from .bench import INPUT_SHAPES

    shape = INPUT_SHAPES[model_name]
    model = nn.build_model(model_name, shape, 10)
    crit = nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    return lambda: crit(model(x), y)


# --- the command line -----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m distnet.bench --predict",
        description="Predict distnet's step time, images/s and efficiency on many nodes from an "
                    "alpha-beta-gamma model of MPICH's allreduce and the measured compute per step.")
    p.add_argument("--predict", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--nodes", default="8,32,128,512", help="node counts (default: %(default)s)")
    p.add_argument("--bandwidth", help="link bandwidth, e.g. 10Gbit, 100Mbit, 1.25GB/s (default: the "
                                       "calibrated --link's)")
    p.add_argument("--latency", help="per-message latency (alpha), e.g. 5us, 0.5ms (default: the --link's)")
    p.add_argument("--link", default="bridge", help="calibrated link whose alpha/beta/gamma fill in what "
                                                    "--bandwidth/--latency leave out (default: %(default)s)")
    p.add_argument("--model", default="cnn2", help="model whose gradient and compute to use (default: %(default)s)")
    p.add_argument("--batch-size", default="128", help="global batch, fixed across node counts (default: %(default)s)")
    p.add_argument("--per-rank-batch", help="weak scaling instead: this many samples per rank")
    p.add_argument("--ppn", default="1", help="MPI ranks per node (default: %(default)s)")
    p.add_argument("--compress", default="none", choices=("none", "fp16"), help="gradient compression")
    p.add_argument("--overlap", action="store_true", help="bucketed allreduce overlapped with backward")
    p.add_argument("--bucket-mb", default="1", help="overlap bucket size in MiB (default: %(default)s)")
    p.add_argument("--calibration", default=DEFAULT_CALIBRATION, help="calibration JSON (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    return p


def predict_from_args(args) -> tuple[list[dict], dict]:
    nodes = parse_nodes(args.nodes)
    ppn = parse_positive_int("--ppn", args.ppn)
    batch = parse_positive_int("--batch-size", args.batch_size)
    per_rank = parse_positive_int("--per-rank-batch", args.per_rank_batch) if args.per_rank_batch else None
    try:
        bucket = float(args.bucket_mb)
        if not bucket > 0 or math.isinf(bucket):
            raise ValueError
    except ValueError:
        raise ScalingError("--bucket-mb", f"expected a positive number of MiB, got {args.bucket_mb!r}") from None
    bandwidth = parse_bandwidth(args.bandwidth) if args.bandwidth is not None else None
    latency = parse_latency(args.latency) if args.latency is not None else None
    doc = load_calibration(args.calibration)
    base = link_from(doc, args.link)
    net = Link(latency if latency is not None else base.alpha,
               1.0 / bandwidth if bandwidth is not None else base.beta, base.gamma, args.link)
    shm = link_from(doc, "shm") if "shm" in doc.get("links", {}) else net
    compute = compute_from(doc, args.model)
    try:
        comms = model_comms(args.model)
    except Exception as exc:  # unknown name, bad spec
        raise ScalingError("--model", str(exc)) from None
    rows = [predict(Setting(n, ppn, batch, per_rank, args.compress, args.overlap, int(bucket * (1 << 20))),
                    comms, compute, net, shm) for n in nodes]
    info = {"net": net, "shm": shm, "compute": compute, "comms": comms}
    return rows, info


def format_rows(rows, info, args) -> str:
    net, compute, comms = info["net"], info["compute"], info["comms"]
    lines = [f"distnet scaling model: {args.model}, gradient {comms.grad_count} x "
             f"{'float16' if args.compress == 'fp16' else 'float32'} = {rows[0]['grad_bytes'] / 1e6:.3f} MB, "
             f"ppn {rows[0]['ranks'] // rows[0]['nodes']}" + (", --overlap (an upper bound)" if args.overlap else ""),
             f"  link: alpha {net.alpha * 1e6:.2f} us, {8 / net.beta / 1e9:.3g} Gbit/s, "
             f"gamma {net.gamma * 1e9:.3f} ns/B; compute per step {compute.intercept * 1e3:.2f} ms + "
             f"{compute.per_sample * 1e3:.3f} ms/sample (calibrated on this machine)",
             "",
             f"{'nodes':>6s} {'batch/rank':>10s} {'compute ms':>10s} {'comm ms':>9s} {'step ms':>9s} "
             f"{'images/s':>10s} {'efficiency':>10s}  allreduce"]
    for r in rows:
        lines.append(f"{r['nodes']:6d} {r['per_rank_batch']:10d} {r['compute_s'] * 1e3:10.3f} "
                     f"{r['comm_s'] * 1e3:9.3f} {r['step_s'] * 1e3:9.3f} {r['images_per_s']:10.0f} "
                     f"{r['efficiency'] * 100:9.1f}%  {r['algorithm']}")
    if args.compress == "fp16" and not compute.fp16_codec_s:
        lines.append("(fp16's encode/decode CPU time was not measured into this calibration: "
                     "compute excludes it; rerun calibrate_links.py --compute with distnet.distributed.compress)")
    if any(r["global_batch"] < r["ranks"] for r in rows):
        lines.append("(ranks beyond the global batch get no samples: they only wait in the allreduce)")
    lines.append("efficiency: one rank's step at the same per-rank batch / predicted step (weak scaling)"
                 if args.per_rank_batch else
                 "efficiency: one rank's step on the whole global batch / (ranks x predicted step)")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse's own errors already exit 2 with one usage line
    try:
        rows, info = predict_from_args(args)
    except ScalingError as exc:
        print(f"distnet: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(format_rows(rows, info, args))
    return 0
