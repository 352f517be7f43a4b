"""Resume under real MPI with mpi4py's unpickler switched off on every rank: the trainer's
resume path (rank 0 reads, everyone receives) must still work, so nothing on it unpickles
what came over the network (issue 12, item 4)."""
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from distnet import checkpoint as ckpt_io
from distnet.config import TrainConfig
from distnet.data.synthetic import synthetic
from distnet.distributed import SingleProcessCommunicator
from distnet.errors import UserError
from distnet.train import build_trainer

pytestmark = pytest.mark.mpi(min_size=2)

CFG = dict(dataset="synthetic", model="lenet5", batch_size=16, optimizer="adam", lr=0.001,
           schedule="constant", warmup_steps=0, no_progress=True, eval_every=0)


@pytest.fixture(scope="module")
def shared_dir(comm):
    """A directory every rank sees (one machine), with a checkpoint of 3 Adam steps."""
    path = tempfile.mkdtemp(prefix="distnet-bcast-") if comm.rank == 0 else None
    path = Path(comm.broadcast_object(path))  # before pickle is switched off
    if comm.rank == 0:
        t = build_trainer(TrainConfig(**CFG), SingleProcessCommunicator(), synthetic("train", n=64), synthetic("test", n=8))
        for _ in range(3):
            t.train_step()
        ckpt_io.save_in_dir(t.snapshot(), path)
    comm.barrier()
    yield path
    comm.barrier()
    if comm.rank == 0:
        shutil.rmtree(path)


@pytest.fixture
def no_unpickling():
    """mpi4py's object messages unpickle with MPI.pickle.loads: make that an error."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("mpi4py unpickled a message")

    MPI.pickle.__init__(pickle.dumps, refuse)
    yield calls
    MPI.pickle.__init__(pickle.dumps, pickle.loads)


def trainer(comm, **overrides):
    return build_trainer(TrainConfig(**dict(CFG, **overrides)), comm, synthetic("train", n=64), synthetic("test", n=8))


def test_resume_reaches_every_rank_without_unpickling(comm, shared_dir, no_unpickling):
    t = trainer(comm, checkpoint_dir=str(shared_dir), resume="latest")
    t.load_resume_point()
    assert no_unpickling == []
    assert t.step == 3
    saved = ckpt_io.load(shared_dir / ckpt_io.LATEST)
    np.testing.assert_array_equal(t.model.flat_params, saved.params)
    state = t.optimizer.state_dict()
    for key, value in saved.optimizer.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)
    # every rank holds the same bytes
    rows = comm.allgather(t.model.flat_params.view(np.uint32))
    assert (rows == rows[0]).all()


def test_errors_and_fresh_starts_reach_every_rank_as_text(comm, shared_dir, tmp_path_factory, no_unpickling):
    missing = shared_dir / "nope.npz"
    with pytest.raises(UserError, match=f"^{missing}: checkpoint not found$"):
        trainer(comm, resume=str(missing)).load_resume_point()
    empty = shared_dir / "empty"  # --resume with no checkpoint yet: a fresh start everywhere
    t = trainer(comm, checkpoint_dir=str(empty), resume="latest")
    t.load_resume_point()
    assert t.step == 0
    # a mismatch is found by every rank from the received config
    with pytest.raises(UserError, match="checkpoint was written with optimizer='adam'"):
        trainer(comm, checkpoint_dir=str(shared_dir), resume="latest", optimizer="adamw").load_resume_point()
    assert no_unpickling == []
