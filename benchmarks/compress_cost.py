"""What --compress fp16 costs on a link that is not slow: ``mpirun -n 3 python benchmarks/compress_cost.py``.

Times, interleaved round by round (so load from other work hits every variant alike), the
reduction of a gradient buffer of each size three ways:

* ``float32``   MPI_Allreduce(SUM) of float32, what plain distnet does;
* ``fp16 EF``   distnet.distributed.compress.FP16Compression: scale, round, alltoall, float32
                sum, round, allgather, decode, with error feedback (what --compress fp16 does);
* ``mpi fp16``  MPI_Allreduce(SUM) of float16 (MPICH 5's extension; not portable: MPI has no
                float16 type, Open MPI may refuse it), scaled by hand, no error feedback:
                only to show what a native float16 sum would cost.

Prints the median and spread per variant and size, and the payload bytes each rank sends.
Loopback links are fast, so this is the CPU price of compressing; on a slow link the bytes
decide (README, "Slow networks").
"""
import statistics
import sys
import time

import numpy as np
from mpi4py import MPI

from distnet.distributed.compress import FP16Compression
from distnet.distributed.mpi import MPICommunicator

SIZES = {"cnn2": 80_202, "cifar-cnn": 666_538, "cifar-resnet": 1_646_122}


def main(rounds: int = 15) -> None:
    world = MPI.COMM_WORLD
    comm = MPICommunicator(world)
    rng = np.random.default_rng(comm.rank)
    for name, size in SIZES.items():
        grads = (rng.standard_normal(size) * 1e-5).astype(np.float32)
        work = grads.copy()
        compression = FP16Compression(comm, work)
        half = np.empty(size, np.float16)
        times = {"float32": [], "fp16 EF": [], "mpi fp16": []}
        for _ in range(rounds):
            world.Barrier()
            work[:] = grads
            t = time.perf_counter(); world.Allreduce(MPI.IN_PLACE, work, op=MPI.SUM)
            times["float32"].append(time.perf_counter() - t)
            world.Barrier()
            work[:] = grads
            t = time.perf_counter(); compression.allreduce(work)
            times["fp16 EF"].append(time.perf_counter() - t)
            world.Barrier()
            t = time.perf_counter()
            np.multiply(grads, 2.0 ** 20, out=work)  # a fixed scale: sums of 3 stay finite
            half[:] = work
            world.Allreduce(MPI.IN_PLACE, half, op=MPI.SUM)
            np.multiply(half, 2.0 ** -20, out=work, dtype=np.float32, casting="unsafe")
            times["mpi fp16"].append(time.perf_counter() - t)
        sent_fp16 = compression.bytes_sent / rounds
        ring = 2 * (comm.size - 1) / comm.size * size
        if comm.rank == 0:
            for variant, ts in times.items():
                ms = sorted(x * 1e3 for x in ts)
                payload = {"float32": ring * 4, "fp16 EF": sent_fp16, "mpi fp16": ring * 2}[variant]
                print(f"{name:12s} {size:9,d} values  {variant:8s}  median {statistics.median(ms):7.2f} ms "
                      f"(min {ms[0]:6.2f}, max {ms[-1]:6.2f})  sent/rank {payload / 1e6:6.3f} MB"
                      f"{'' if variant != 'float32' else ' (ring estimate)'}", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
