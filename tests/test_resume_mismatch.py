"""A resume is refused when the checkpoint was written under settings that change the
trajectory (issue 12, item 5, "Resume mismatches"): another seed (weights and data order),
global batch size (the data order's cut), optimizer (its state would be misread: momentum
and nesterov even share the same state keys) or --deterministic (another way of summing).

Each case writes a real checkpoint with one configuration and resumes it with another
through Trainer.load_resume_point, the trainer's own path (rank 0 reads, the result is
broadcast, every rank checks)."""
import dataclasses

import pytest

from conftest import run_train
from distnet import checkpoint as ckpt_io
from distnet.config import TrainConfig
from distnet.data.synthetic import synthetic
from distnet.distributed import SingleProcessCommunicator
from distnet.errors import UserError
from distnet.train import build_trainer

BASE = TrainConfig(dataset="synthetic", model="mlp", batch_size=16, optimizer="momentum", lr=0.01,
                   schedule="constant", warmup_steps=0, no_progress=True, eval_every=0)


def trainer(cfg):
    return build_trainer(cfg, SingleProcessCommunicator(), synthetic("train", n=64), synthetic("test", n=16))


@pytest.fixture
def checkpoint(tmp_path):
    """A checkpoint of BASE after 2 steps."""
    t = trainer(BASE)
    t.train_step()
    t.train_step()
    path = tmp_path / "ck.npz"
    ckpt_io.save(t.snapshot(), path)
    return path


def test_the_same_settings_resume(checkpoint):
    t = trainer(dataclasses.replace(BASE, resume=str(checkpoint)))
    t.load_resume_point()
    assert t.step == 2


@pytest.mark.parametrize("change, flag", [
    ({"seed": 1}, "seed"),
    ({"batch_size": 32}, "batch-size"),
    ({"optimizer": "nesterov"}, "optimizer"),
    ({"deterministic": True}, "deterministic"),
    ({"dataset": "mnist"}, "dataset"),
])
def test_a_resume_with_other_settings_is_refused(checkpoint, change, flag):
    t = trainer(dataclasses.replace(BASE, resume=str(checkpoint), **change))
    with pytest.raises(UserError, match=rf"^{checkpoint}: checkpoint was written with {flag}=") as info:
        t.load_resume_point()
    (value,) = change.values()
    assert f"this run has {value!r}" in str(info.value)
    assert t.step == 0  # nothing was loaded


def test_the_command_line_refuses_it_in_one_line(tmp_path):
    args = ["--dataset", "synthetic", "--model", "mlp", "--batch-size", "32", "--max-steps", "2",
            "--no-progress", "--eval-every", "0", "--checkpoint-dir", tmp_path]
    assert run_train(*args).returncode == 0
    r = run_train(*args, "--resume", "--seed", "7", "--max-steps", "4")
    assert r.returncode == 2
    assert r.stderr.strip() == (f"distnet: error: {tmp_path / 'latest.npz'}: checkpoint was written "
                                f"with seed=0, this run has 7")
