"""The ranks of one machine share one decoded copy of the data (issue 8, item 4).

train.load_both_splits lets rank 0 load first while the others wait at a barrier: so rank 0
alone decodes MNIST into the decoded cache, and every rank then memory-maps that one file.
Checked on the real MNIST test split: the number of decodes over all ranks, the inode each
rank has mapped, and the bytes against a decode done by this rank itself.
"""
import numpy as np
import pytest
from mpi4py import MPI

from distnet.config import TrainConfig
from distnet.data import registry
from distnet.data.idx import read_idx_pair
from distnet.distributed import get_communicator
from distnet.train import load_both_splits

pytestmark = pytest.mark.mpi(min_size=2)


def _mapped_inodes(word: str) -> set[int]:
    with open("/proc/self/maps") as f:
        return {int(line.split()[4]) for line in f if word in line and line.rstrip().endswith(".npy")}


def test_rank0_decodes_once_and_every_rank_maps_its_file(tmp_path_factory, monkeypatch):
    comm = get_communicator()
    world = MPI.COMM_WORLD
    # one fresh cache folder for all ranks: rank 0's temporary path, broadcast
    root = world.bcast(str(tmp_path_factory.mktemp("xdg")) if comm.rank == 0 else None, root=0)
    monkeypatch.setenv("XDG_CACHE_HOME", root)
    monkeypatch.delenv("DISTNET_DATA", raising=False)
    registry._load_cached.cache_clear()
    decodes = []
    real_decode = registry._decode
    monkeypatch.setattr(registry, "_decode", lambda *a: decodes.append(a[1]) or real_decode(*a))
    try:
        train, test = load_both_splits(TrainConfig(download=False), comm, registry.load_dataset)
    finally:
        registry._load_cached.cache_clear()
    counts = world.allgather(len(decodes))
    assert counts[0] == 2 and sum(counts) == 2, f"decodes per rank: {counts}"  # train and test, rank 0 only
    inodes = world.allgather(sorted(_mapped_inodes("mnist-")))
    assert len(inodes[0]) == 4 and all(i == inodes[0] for i in inodes), inodes  # 2 splits x (images, labels)
    folder = registry.embedded_dir()
    want_x, want_y = read_idx_pair(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
    assert np.array_equal(test.images[:, 0], want_x) and np.array_equal(test.labels, want_y)
    assert len(train) == 60000
    world.Barrier()  # nobody removes the folder while another rank still reads it
