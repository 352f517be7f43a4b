"""Checkpoint files: round trip, refusal of every kind of damage, atomicity under SIGKILL."""
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from conftest import REPO
from distnet import checkpoint as ck
from distnet.errors import UserError


def make(step=7, n=10):
    rng = np.random.default_rng(step)
    return ck.Checkpoint(params=rng.standard_normal(n).astype(np.float32),
                         optimizer={"lr": 0.1, "step": step, "exp_avg": rng.standard_normal(n).astype(np.float32)},
                         step=step, epoch=1, position=2, seed=3, config={"model": "lenet5", "batch_size": 64})


def test_round_trip(tmp_path):
    original = make()
    ck.save(original, tmp_path / "a.npz")
    loaded = ck.load(tmp_path / "a.npz")
    np.testing.assert_array_equal(loaded.params, original.params)
    np.testing.assert_array_equal(loaded.optimizer["exp_avg"], original.optimizer["exp_avg"])
    assert float(loaded.optimizer["lr"]) == 0.1 and int(loaded.optimizer["step"]) == 7
    assert (loaded.step, loaded.epoch, loaded.position, loaded.seed) == (7, 1, 2, 3)
    assert loaded.config == original.config
    with np.load(tmp_path / "a.npz", allow_pickle=False) as raw:  # plain npz, no pickles
        assert raw["params"].dtype == np.float32 and int(raw["step"]) == 7


def test_save_in_dir_keeps_latest_and_newest_numbered(tmp_path):
    for step in range(1, 6):
        ck.save_in_dir(make(step), tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000004.npz", "ckpt-00000005.npz", "latest.npz"]
    assert ck.load(tmp_path / "latest.npz").step == 5


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("damage,needle", [
    ("truncate", "corrupt"),
    ("garbage", "corrupt"),
    ("flip", "corrupt"),
    ("params", "checksum mismatch"),
    ("version", "format version 99"),
    ("missing", "missing step"),
    ("absent", "not found"),
])
def test_damaged_checkpoints_are_refused(tmp_path, damage, needle):
    path = tmp_path / "c.npz"
    ck.save(make(), path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) * 2 // 3])
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "flip":  # one bit inside the params payload: zip CRC or our checksum catches it
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("params.npy")
        pos = info.header_offset + 30 + len(info.filename) + info.extra.__len__() + 128 + 3
        path.write_bytes(data[:pos] + bytes([data[pos] ^ 0x10]) + data[pos + 1:])
    elif damage == "params":
        _rewrite(path, params=np.zeros(10, dtype=np.float32))
    elif damage == "version":
        _rewrite(path, format_version=np.array(99))
    elif damage == "missing":
        _rewrite(path, step=None)
    elif damage == "absent":
        path.unlink()
    with pytest.raises(UserError) as err:
        ck.load(path)
    message = str(err.value)
    assert str(path) in message and needle in message and "\n" not in message


WRITER = """
import sys, numpy as np
from distnet import checkpoint as ck
step = 0
params = np.zeros(8_000_000, dtype=np.float32)
while True:
    step += 1
    params[:] = step
    ck.save_in_dir(ck.Checkpoint(params, {}, step, 0, step, 0, {}), sys.argv[1], keep=1)
    print(step, flush=True)
"""


def test_sigkill_during_writes_leaves_a_loadable_checkpoint(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=env,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip()  # at least one complete checkpoint exists
        time.sleep(0.05 + 0.13 * attempt)  # land somewhere inside a later write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        loaded = ck.load(tmp_path / "latest.npz")
        assert loaded.params[0] == loaded.params[-1] == loaded.step
    ck.save_in_dir(make(1000), tmp_path, keep=1)
    assert not list(tmp_path.glob(".*.tmp")), "temporary files of killed writers are cleaned up"
