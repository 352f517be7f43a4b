"""Atomic writes checked deterministically (issue 12, item 5 "Atomic writes"): a failure is
injected between the write and the rename, and the rename itself is watched, instead of
hoping a SIGKILL lands inside a write."""

import os
from pathlib import Path

import numpy as np
import pytest

from distnet import atomic
from distnet import checkpoint as ck
from distnet.data import download


class Injected(OSError):
    pass


def _fail_replace(monkeypatch):
    calls = []

    def replace(src, dst):
        calls.append((Path(src), Path(dst)))
        raise Injected("injected failure between write and rename")

    monkeypatch.setattr(atomic.os, "replace", replace)
    return calls


def test_failure_before_rename_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old contents")
    calls = _fail_replace(monkeypatch)
    with pytest.raises(Injected):
        with atomic.atomic_write(target) as f:
            f.write(b"new contents that must not appear")
    assert len(calls) == 1 and calls[0][1] == target and calls[0][0] != target
    assert calls[0][0].parent == target.parent  # same directory: the rename is atomic there
    assert target.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_rename_is_the_only_moment_the_target_changes(tmp_path, monkeypatch):
    """At the rename the target still holds the old bytes and the temporary file the new."""
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    seen = []
    real = os.replace

    def replace(src, dst):
        seen.append((Path(dst).read_bytes(), Path(src).read_bytes()))
        real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with atomic.atomic_write(target, durable=True) as f:
        f.write(b"new")
        assert target.read_bytes() == b"old"  # nothing written through the target itself
    assert seen == [(b"old", b"new")] and target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_durable_write_fsyncs_file_before_rename_and_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}"))) or real_fsync(fd))
    monkeypatch.setattr(atomic.os, "replace", lambda s, d: events.append(("replace",)) or real_replace(s, d))
    with atomic.atomic_write(tmp_path / "c", durable=True) as f:
        f.write(b"x")
    assert events == [("fsync", False), ("replace",), ("fsync", True)]


def test_exception_in_block_after_partial_write_keeps_old_file(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_write(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def _ckpt(step):
    return ck.Checkpoint(params=np.full(100, step, np.float32), optimizer={"lr": 0.1}, step=step,
                         epoch=0, position=step, seed=0, config={})


def test_checkpoint_save_failing_at_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    ck.save_in_dir(_ckpt(1), tmp_path, keep=0)
    before = sorted(p.name for p in tmp_path.iterdir())
    calls = _fail_replace(monkeypatch)
    with pytest.raises(Injected):
        ck.save_in_dir(_ckpt(2), tmp_path, keep=0)
    assert calls  # the writer really went through a rename
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    loaded = ck.load(tmp_path / ck.LATEST)
    assert loaded.step == 1 and np.all(loaded.params == 1)


def test_download_failing_at_rename_keeps_old_file_and_no_part(server, tmp_path, monkeypatch):
    import hashlib

    base, handler = server
    handler.files["/f"] = b"fresh bytes"
    dest = tmp_path / "f"
    dest.write_bytes(b"older copy")
    _fail_replace(monkeypatch)
    with pytest.raises(download.DownloadError, match="injected failure"):
        download.fetch([base + "/f"], dest, hashlib.sha256(b"fresh bytes").hexdigest())
    assert dest.read_bytes() == b"older copy" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    """A checkpoint or figure on a shared volume must be readable as a plain open() would
    leave it; mkstemp alone makes it 0600."""
    old = os.umask(0o022)
    try:
        with atomic.atomic_write(tmp_path / "shared.bin", durable=True) as f:
            f.write(b"x")
        os.umask(0o077)
        with atomic.atomic_write(tmp_path / "private.bin") as f:
            f.write(b"y")
    finally:
        os.umask(old)
    assert (tmp_path / "shared.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.bin").stat().st_mode & 0o777 == 0o600
