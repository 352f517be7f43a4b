"""Checksum-verified downloads from a list of mirrors, with urllib only.

A file is streamed into a temporary file next to its destination and only moved into
place (``os.replace``, atomic on one filesystem) once its SHA-256 matches. So the
destination either does not exist or holds the verified bytes; a cut connection, a
captive-portal HTML page or a tampered mirror never leaves a file a later run would
trust. Each mirror is tried in turn.

The expected size is kept beside each SHA-256: a transfer stops as soon as it passes it, so
a mirror serving the wrong (or an endless) file cannot fill the disk. Only https and http are
fetched, redirects included.

Timeouts are short because the common failure is "no network at all" (clusters, CI), and
the user should hear within seconds which file to fetch by hand. ``timeout`` bounds each
connection attempt and each stalled read, not the whole transfer. ``DISTNET_OFFLINE=1``
skips the network entirely.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from distnet.atomic import atomic_write
from distnet.errors import UserError

from ._util import oneline

log = logging.getLogger("distnet.data")

_CHUNK = 1 << 20
_USER_AGENT = "distnet-data/0.1 (+urllib)"


def offline() -> bool:
    """True when ``$DISTNET_OFFLINE`` asks for no network access."""
    return os.environ.get("DISTNET_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _reason(exc: BaseException) -> str:
    """Short description of why one mirror failed."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        if isinstance(exc.reason, str):
            return oneline(exc.reason)
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return oneline(text)


class _ChecksumMismatch(Exception):
    pass


_SCHEMES = ("https", "http")


def _scheme(url: str) -> str:
    return urllib.parse.urlsplit(url).scheme.lower()


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only: urllib alone would follow one to ftp:, and a mirror
    taken over must not point the download at another kind of resource."""

    def http_error_302(self, req, fp, code, msg, headers):
        # Checked before urllib's own check, which turns file: or data: into a bare "HTTP 302".
        location = headers.get("location") or headers.get("uri")
        if location is not None:
            target = urllib.parse.urljoin(req.full_url, location)
            if _scheme(target) not in _SCHEMES:
                fp.close()
                raise urllib.error.URLError(f"refused redirect to {oneline(target)[:100]}"
                                            f" (only https and http are followed)")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _try_one(url: str, dest: Path, sha256: str, timeout: float, size: int | None) -> str | None:
    """Download ``url`` to ``dest`` if its checksum is right; None on success, else why not.

    With ``size`` the transfer is aborted as soon as it would pass that many bytes (or the
    server announces more), so a wrong or hostile mirror cannot fill the disk.
    """
    if _scheme(url) not in _SCHEMES:
        return "refused: only https and http URLs are fetched"
    try:
        with atomic_write(dest, suffix=".part") as out:
            h = hashlib.sha256()
            got_bytes = 0
            request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
            with _OPENER.open(request, timeout=timeout) as response:
                announced = response.headers.get("Content-Length")
                if size is not None and announced is not None and announced.strip().isdigit() \
                        and int(announced) > size:
                    raise _ChecksumMismatch(f"size mismatch: server announces {int(announced)} bytes, "
                                            f"expected {size}")
                limit = None if size is None else size + 1
                while True:
                    want = _CHUNK if limit is None else min(_CHUNK, limit - got_bytes)
                    chunk = response.read(want) if want > 0 else b""
                    if not chunk:
                        break
                    got_bytes += len(chunk)
                    if size is not None and got_bytes > size:
                        raise _ChecksumMismatch(f"size mismatch: more than the expected {size} bytes")
                    h.update(chunk)
                    out.write(chunk)
            got = h.hexdigest()
            if got != sha256.lower():  # leaving the block by an exception discards the file
                raise _ChecksumMismatch(f"checksum mismatch: got sha256 {got[:16]}... for {got_bytes} bytes, "
                                        f"expected {sha256[:16]}...")
        return None
    except _ChecksumMismatch as exc:
        return str(exc)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        # ValueError: a malformed URL. OSError covers timeouts, refused connections, disk errors.
        return _reason(exc)


class DownloadError(UserError):
    """A UserError whose ``reason`` is the short why (without the advice), for callers that
    wrap it in their own message."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def fetch(urls, dest, sha256: str, timeout: float = 5.0, size: int | None = None) -> Path:
    """Download the first mirror in ``urls`` whose bytes have SHA-256 ``sha256`` to ``dest``.

    ``size``: the expected length in bytes; a transfer is cut off as soon as it passes it.

    Returns ``dest``. Raises UserError naming every URL tried and why it failed, and
    where to put the file by hand. Nothing is left at ``dest`` unless verified.
    """
    dest = Path(dest)
    urls = [urls] if isinstance(urls, str) else list(urls)
    by_hand = f"download it yourself and put it at {dest} (sha256 {sha256})"
    if offline():
        why = "not attempted because DISTNET_OFFLINE is set"
        raise DownloadError(f"{dest.name}: download {why}; {by_hand}", why)
    if not urls:
        why = "no download location known"
        raise DownloadError(f"{dest.name}: {why}; {by_hand}", why)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = f"cannot create {dest.parent}: {oneline(exc.strerror or exc)}"
        raise DownloadError(f"{dest.name}: {why}; {by_hand}", why) from None
    tried = []
    for url in urls:
        log.info("downloading %s -> %s", url, dest)
        why = _try_one(url, dest, sha256, timeout, size)
        if why is None:
            return dest
        log.info("download of %s failed: %s", url, why)
        tried.append(f"{url}: {why}")
    why = "tried " + "; ".join(tried)
    raise DownloadError(f"{dest.name}: download failed ({why}); {by_hand}", why)
