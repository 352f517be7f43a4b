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


# --------------------------------------------------------------------------- size cap and redirects (issue 12)

import http.server  # noqa: E402
import threading  # noqa: E402
from conftest import serve_on_loopback  # noqa: E402


class _Streamer(http.server.BaseHTTPRequestHandler):
    """/endless: 300 MiB with no Content-Length; /announce: a Content-Length of 300 MiB;
    /to-<scheme>: a redirect to that scheme; /to-good: a redirect to /good on this server."""

    sent: list
    done: threading.Event
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        if self.path.startswith("/to-"):
            target = {"to-ftp": "ftp://127.0.0.1/f", "to-file": "file:///etc/passwd",
                      "to-good": "/good", "to-data": "data:,hello"}[self.path[1:]]
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
            return
        if self.path == "/good":
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD)
            return
        self.send_response(200)
        if self.path == "/announce":
            self.send_header("Content-Length", str(300 << 20))
        self.end_headers()
        block = bytes(1 << 16)
        try:
            for _ in range((300 << 20) // len(block)):
                self.wfile.write(block)
                self.sent[0] += len(block)
        except OSError:
            pass
        finally:
            self.done.set()

    def log_message(self, *args):
        pass


@pytest.fixture
def streamer(monkeypatch):
    yield from serve_on_loopback(monkeypatch, type("H", (_Streamer,), {"sent": [0], "done": threading.Event()}))


def test_download_past_the_expected_size_is_cut_off(streamer, tmp_path):
    base, handler = streamer
    with pytest.raises(UserError) as info:
        fetch([base + "/endless"], tmp_path / "f", SHA, size=5)
    assert "size mismatch: more than the expected 5 bytes" in str(info.value)
    assert handler.done.wait(20)  # the server noticed the client hang up
    assert handler.sent[0] < 64 << 20, handler.sent[0]  # socket buffers at most, not 300 MiB
    assert _leftovers(tmp_path) == []


def test_announced_length_past_the_expected_size_is_refused_before_reading(streamer, tmp_path):
    base, handler = streamer
    with pytest.raises(UserError, match="server announces 314572800 bytes, expected 5"):
        fetch([base + "/announce"], tmp_path / "f", SHA, size=5)
    assert _leftovers(tmp_path) == []


def test_exact_expected_size_is_accepted(server, tmp_path):
    base, handler = server
    handler.files["/good.bin"] = GOOD
    assert fetch([base + "/good.bin"], tmp_path / "f", SHA, size=len(GOOD)).read_bytes() == GOOD
    with pytest.raises(UserError, match="size mismatch: server announces 70000 bytes, expected 69999"):
        fetch([base + "/good.bin"], tmp_path / "g", SHA, size=len(GOOD) - 1)


@pytest.mark.parametrize("where", ["to-ftp", "to-file", "to-data"])
def test_redirect_to_anything_but_http_is_refused(streamer, tmp_path, where):
    base, _ = streamer
    with pytest.raises(UserError) as info:
        fetch([f"{base}/{where}"], tmp_path / "f", SHA)
    assert "refused redirect to" in str(info.value) and "only https and http" in str(info.value)
    assert _leftovers(tmp_path) == []


def test_redirect_to_http_is_followed(streamer, tmp_path):
    base, _ = streamer
    assert fetch([f"{base}/to-good"], tmp_path / "f", SHA, size=len(GOOD)).read_bytes() == GOOD


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "data:,x"])
def test_only_http_urls_are_fetched(tmp_path, monkeypatch, url):
    monkeypatch.delenv("DISTNET_OFFLINE", raising=False)
    with pytest.raises(UserError, match="refused: only https and http URLs are fetched"):
        fetch([url], tmp_path / "f", SHA)
    assert _leftovers(tmp_path) == []


def test_registry_downloads_carry_the_expected_size(server, tmp_path, monkeypatch):
    import dataclasses
    from pathlib import Path

    from distnet.data import load_dataset, registry

    embedded = Path(registry.embedded_dir())
    base, handler = server
    labels = (embedded / "t10k-labels-idx1-ubyte.gz").read_bytes()
    handler.files["/m/t10k-labels-idx1-ubyte.gz"] = labels + b"x" * 1_000_000
    handler.files["/m/t10k-images-idx3-ubyte.gz"] = (embedded / "t10k-images-idx3-ubyte.gz").read_bytes()
    spec = dataclasses.replace(registry.get_spec("mnist"), mirrors=(base + "/m/",))
    monkeypatch.setitem(registry._BY_NAME, "mnist", spec)
    assert spec.remote("t10k-labels-idx1-ubyte.gz").size == len(labels) == 4542
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz: size mismatch: server announces 1004542 bytes, expected 4542"):
        load_dataset("mnist", "test", data_dir=tmp_path / "dl")
