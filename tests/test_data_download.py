"""fetch() against a real HTTP server on 127.0.0.1: verified saves, rejected corrupt files,
mirror fallback, fast failure when nothing listens, and DISTNET_OFFLINE."""

import hashlib
import socket
import time

import pytest

from distnet.data.download import fetch
from distnet.errors import UserError

GOOD = b"the real file\n" * 5000
SHA = hashlib.sha256(GOOD).hexdigest()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_good_file_is_saved_and_verified(server, tmp_path):
    base, handler = server
    handler.files["/good.bin"] = GOOD
    dest = tmp_path / "sub" / "file.bin"
    assert fetch([base + "/good.bin"], dest, SHA) == dest
    assert dest.read_bytes() == GOOD
    assert _leftovers(dest.parent) == ["file.bin"]  # no temp files left behind


def test_corrupted_file_is_rejected_and_nothing_left(server, tmp_path):
    base, handler = server
    handler.files["/bad.bin"] = GOOD[:-1] + b"X"
    dest = tmp_path / "file.bin"
    with pytest.raises(UserError) as info:
        fetch([base + "/bad.bin"], dest, SHA)
    message = str(info.value)
    assert "checksum mismatch" in message and base + "/bad.bin" in message
    assert str(dest) in message and "\n" not in message
    assert _leftovers(tmp_path) == []


def test_failed_download_keeps_existing_destination(server, tmp_path):
    base, handler = server
    handler.files["/bad.bin"] = b"junk"
    dest = tmp_path / "file.bin"
    dest.write_bytes(b"older copy")
    with pytest.raises(UserError):
        fetch([base + "/bad.bin"], dest, SHA)
    assert dest.read_bytes() == b"older copy" and _leftovers(tmp_path) == ["file.bin"]


def test_bad_first_mirror_then_good_second(server, tmp_path):
    base, handler = server
    handler.files["/m1/f"] = b"tampered"
    handler.files["/m3/f"] = GOOD
    dest = tmp_path / "f"
    fetch([base + "/m1/f", base + "/m2/f", base + "/m3/f"], dest, SHA)  # m2 is a 404
    assert dest.read_bytes() == GOOD
    assert handler.hits == ["/m1/f", "/m2/f", "/m3/f"]
    assert _leftovers(tmp_path) == ["f"]


def test_all_mirrors_fail_lists_each(server, tmp_path):
    base, _ = server
    with pytest.raises(UserError) as info:
        fetch([base + "/a", base + "/b"], tmp_path / "f.gz", SHA)
    message = str(info.value)
    assert f"{base}/a: HTTP 404" in message and f"{base}/b: HTTP 404" in message
    assert f"put it at {tmp_path / 'f.gz'}" in message


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_server_gone_fails_fast(tmp_path, monkeypatch):
    monkeypatch.delenv("DISTNET_OFFLINE", raising=False)
    url = f"http://127.0.0.1:{_closed_port()}/file.gz"
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        fetch([url, url], tmp_path / "file.gz", SHA)
    assert time.monotonic() - start < 5
    assert url in str(info.value) and "refused" in str(info.value).lower()
    assert _leftovers(tmp_path) == []


def test_offline_env_does_not_touch_network(server, tmp_path, monkeypatch):
    base, handler = server
    handler.files["/good.bin"] = GOOD
    monkeypatch.setenv("DISTNET_OFFLINE", "1")
    with pytest.raises(UserError, match="DISTNET_OFFLINE"):
        fetch([base + "/good.bin"], tmp_path / "x", SHA)
    assert handler.hits == [] and _leftovers(tmp_path) == []
