"""The gradient reduction's time on the job's own links: a ``--model FILE:model`` for distnet.train.

launch/slownet-bench.sh runs ``distnet.train --model /datasets/slownet_probe.py:model
--max-steps 1`` on the compose cluster at each link speed.  Before returning cnn2 (the job
then takes its one step and ends), the builder times, on every rank, the reduction of
gradient buffers of cnn2's and cifar-resnet's sizes two ways, interleaved round by round so
that load from other work hits both alike:

* ``float32``  MPI_Allreduce(SUM), what plain distnet (and --overlap, per bucket) does;
* ``fp16``     --compress fp16's FP16Compression (alltoall, float32 sum, allgather, with
               error feedback and its rounding work on the CPU).

Rank 0 prints one ``slownet-probe:`` JSON line per size and variant: median, min and max ms
over the rounds, and the bytes this rank handed to MPI.  A training step's own allreduce is the
same call on the same buffer, so this is the "time per step in the allreduce" of the table.
Why a model file: it is the one hook through which a job of the unchanged image and entry
point runs code of ours on every rank, between MPI's start and the first step.
"""
import json
import os
import statistics
import time

import numpy as np

SIZES = {"cnn2": 80_202, "cifar-resnet": 1_646_122}
ROUNDS = {"cnn2": 12, "cifar-resnet": 5}


def probe() -> None:
    from distnet.distributed import init
    from distnet.distributed.compress import FP16Compression

    comm = init()
    if comm.size < 2:
        return
    rng = np.random.default_rng(comm.rank)
    for name, size in SIZES.items():
        grads = (rng.standard_normal(size) * 1e-5).astype(np.float32)
        work = grads.copy()
        compression = FP16Compression(comm, work)
        times = {"float32": [], "fp16": []}
        for _ in range(ROUNDS[name]):
            for variant in times:
                comm.barrier()
                work[:] = grads
                t = time.perf_counter()
                if variant == "float32":
                    comm.allreduce(work)
                else:
                    compression.allreduce(work)
                times[variant].append((time.perf_counter() - t) * 1e3)
        if comm.rank == 0:
            for variant, ms in times.items():
                sent = compression.bytes_sent / ROUNDS[name] if variant == "fp16" else None
                print("slownet-probe: " + json.dumps({
                    "size_of": name, "values": size, "variant": variant, "ranks": comm.size,
                    "median_ms": round(statistics.median(ms), 2), "min_ms": round(min(ms), 2),
                    "max_ms": round(max(ms), 2), "rounds": len(ms),
                    "fp16_payload_mb_per_rank": round(sent / 1e6, 3) if sent else None}), flush=True)


def model(input_shape, num_classes, seed=0):
    from distnet.nn import build_model

    if os.environ.get("SLOWNET_PROBED") != "1":  # once per process, however often it is built
        os.environ["SLOWNET_PROBED"] = "1"
        probe()
    return build_model("cnn2", input_shape, num_classes, seed=seed)
