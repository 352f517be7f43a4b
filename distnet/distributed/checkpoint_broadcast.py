"""Rank 0 sends a checkpoint to every rank as JSON text and raw arrays, never as a pickle.

Why: mpi4py's object broadcast pickles on the root and unpickles on every other rank, and
unpickling runs whatever the bytes say.  A checkpoint is only numbers, so it travels as

  1. a header: UTF-8 JSON (its length first, as one int64), sent as a uint8 buffer.  It
     names each array (name, dtype, shape) and carries every other field -- step, seed,
     config, meta -- as JSON values; an error on the root travels here as its message;
  2. the arrays, each with one plain ``comm.broadcast`` into a buffer the receiver
     allocated from the header, after checking that the dtype is a plain number type.

No rank unpickles anything that came over the network, and a malformed header is a
UserError rather than a crash or a hang.
"""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np

from ..checkpoint import Checkpoint
from ..errors import UserError

MAX_HEADER_BYTES = 16 << 20  # config and meta are a few KiB; anything near this is an error
MAX_NDIM = 8
# Plain numbers only: bool, signed/unsigned integers, floats, complex.  No object, void
# (structured) or string dtypes, whose construction from bytes is where the danger lies.
_DTYPE = re.compile(r"^[<>|=]?[biufc][0-9]{1,2}$")


def broadcast_text(comm, text: str | None, root: int = 0) -> str:
    """Every rank gets root's ``text`` (a str): its UTF-8 length, then its bytes."""
    if comm.rank == root:
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        length = np.array([data.size], dtype=np.int64)
    else:
        length = np.zeros(1, dtype=np.int64)
    comm.broadcast(length, root=root)
    n = int(length[0])
    if not 0 <= n <= MAX_HEADER_BYTES:  # root refuses larger ones before sending them
        raise UserError(f"checkpoint broadcast: header of {n} bytes (at most {MAX_HEADER_BYTES})")
    buf = data.copy() if comm.rank == root else np.empty(n, dtype=np.uint8)
    comm.broadcast(buf, root=root)
    try:
        return buf.tobytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError("checkpoint broadcast: header is not UTF-8") from None


def _json_value(value):
    """A field value as plain JSON (NumPy scalars become Python numbers)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _describe(ckpt: Checkpoint) -> tuple[dict, list[np.ndarray]]:
    """(header, arrays in send order) for ``ckpt``.

    A field holding an array is sent as one; a dict holding any array (the optimizer state)
    as one array per key; everything else as a JSON value."""
    header = {"arrays": [], "array_dicts": {}, "values": {}}
    arrays = []

    def add(name, value):
        value = np.ascontiguousarray(value)
        if not _DTYPE.match(value.dtype.str):
            raise ValueError(f"{name} has dtype {value.dtype}, not a plain number type")
        header["arrays"].append([name, value.dtype.str, list(value.shape)])
        arrays.append(value)

    for f in dataclasses.fields(Checkpoint):
        value = getattr(ckpt, f.name)
        if isinstance(value, np.ndarray):
            add(f.name, value)
        elif isinstance(value, dict) and any(isinstance(v, (np.ndarray, np.generic)) for v in value.values()):
            header["array_dicts"][f.name] = list(value)
            for key, item in value.items():
                add(f"{f.name}/{key}", item)
        else:
            header["values"][f.name] = _json_value(value)
    return header, arrays


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise UserError(f"checkpoint broadcast: malformed header ({what})")


def _allocate(header) -> list[tuple[str, np.ndarray]]:
    """Empty receive buffers for the header's arrays, after checking the whole header:
    plain number dtypes, sane shapes, and only the fields a Checkpoint has."""
    _expect(isinstance(header, dict) and set(header) == {"arrays", "array_dicts", "values"}, "keys")
    arrays, dicts, values = header["arrays"], header["array_dicts"], header["values"]
    _expect(isinstance(arrays, list) and isinstance(dicts, dict) and isinstance(values, dict), "sections")
    out = []
    for entry in arrays:
        _expect(isinstance(entry, list) and len(entry) == 3, "array entry")
        name, dtype, shape = entry
        _expect(isinstance(name, str) and isinstance(dtype, str) and _DTYPE.match(dtype) is not None,
                f"dtype {dtype!r} of {name!r}")
        _expect(isinstance(shape, list) and len(shape) <= MAX_NDIM
                and all(type(d) is int and d >= 0 for d in shape), f"shape of {name!r}")
        try:
            out.append((name, np.empty(tuple(shape), dtype=np.dtype(dtype))))
        except (MemoryError, ValueError):
            raise UserError(f"checkpoint broadcast: cannot allocate {name!r} of shape {shape}") from None
    names = [name for name, _ in out]
    _expect(len(set(names)) == len(names), "duplicate array names")
    in_dicts = set()
    for field, keys in dicts.items():
        _expect(isinstance(keys, list) and all(isinstance(k, str) for k in keys), f"keys of {field!r}")
        in_dicts |= {f"{field}/{key}" for key in keys}
    _expect(in_dicts <= set(names), "arrays named by a dict are missing")
    fields = {f.name for f in dataclasses.fields(Checkpoint)}
    top = [n for n in names if n not in in_dicts] + list(dicts) + list(values)
    _expect(len(set(top)) == len(top) and set(top) <= fields and {"params", "optimizer", "step"} <= set(top),
            f"fields {sorted(top)}")
    kinds = {"int": int, "dict": dict}  # what the JSON-sent fields must hold
    for f in dataclasses.fields(Checkpoint):
        want = kinds.get(str(f.type))
        if f.name in values and want is not None:
            _expect(type(values[f.name]) is want, f"{f.name} is not {want.__name__}")
    return out


def _assemble(header, received: list[tuple[str, np.ndarray]]) -> Checkpoint:
    """The Checkpoint from a header that ``_allocate`` checked and its filled buffers."""
    by_name = dict(received)
    kwargs = dict(header["values"])
    for field, keys in header["array_dicts"].items():
        kwargs[field] = {key: by_name.pop(f"{field}/{key}") for key in keys}
    kwargs.update(by_name)
    return Checkpoint(**kwargs)


def _send_or_receive(comm, message: dict, ckpt: Checkpoint | None, root: int) -> tuple[dict, Checkpoint | None]:
    """Broadcast ``message`` (a small JSON dict) and, when root has one, ``ckpt``.

    On root, a checkpoint that cannot be described becomes an error message, so the other
    ranks learn of it instead of waiting for arrays that never come."""
    arrays = []
    if comm.rank == root:
        try:
            message = dict(message, checkpoint=None)
            if ckpt is not None:
                message["checkpoint"], arrays = _describe(ckpt)
            text = json.dumps(message)
            if len(text.encode("utf-8")) > MAX_HEADER_BYTES:
                raise ValueError(f"header of {len(text)} characters is too large")
        except (TypeError, ValueError) as exc:  # UserError is a ValueError
            message, arrays = {"error": f"checkpoint broadcast: {exc}", "checkpoint": None}, []
            text = json.dumps(message)
    else:
        text = None
    received = broadcast_text(comm, text, root)
    if comm.rank == root:
        for value in arrays:
            comm.broadcast(value, root=root)
        return message, (ckpt if message.get("checkpoint") is not None else None)
    try:
        message = json.loads(received)
    except json.JSONDecodeError:
        raise UserError("checkpoint broadcast: header is not valid JSON") from None
    _expect(isinstance(message, dict) and "checkpoint" in message, "message")
    if message["checkpoint"] is None:
        return message, None
    buffers = _allocate(message["checkpoint"])
    for _, buf in buffers:
        comm.broadcast(buf, root=root)
    return message, _assemble(message["checkpoint"], buffers)


def broadcast_checkpoint(comm, ckpt: Checkpoint | None, root: int = 0) -> Checkpoint | None:
    """Every rank gets root's checkpoint (or None).  Without pickle: see the module's doc.

    An error on root (a checkpoint that cannot be sent) is raised on every rank."""
    if comm.size == 1:
        return ckpt
    message, received = _send_or_receive(comm, {}, ckpt, root)
    if "error" in message:
        raise UserError(str(message["error"]))
    return received


def broadcast_resume_point(comm, payload, root: int = 0):
    """The trainer's resume decision from root to everyone, without pickle.

    ``payload`` on root is None (no --resume), ("fresh", path), ("error", message) or
    ("ckpt", (Checkpoint, path)); every rank gets the same back."""
    if comm.size == 1:
        return payload
    message, ckpt = {}, None
    if comm.rank == root and payload is not None:
        kind, value = payload
        if kind == "ckpt":
            ckpt, source = value
            message = {"kind": kind, "text": str(source)}
        else:
            message = {"kind": kind, "text": str(value)}
    message, ckpt = _send_or_receive(comm, message, ckpt, root)
    if "error" in message:
        return "error", str(message["error"])
    kind, text = message.get("kind"), message.get("text")
    if kind is None:
        return None
    _expect(kind in ("fresh", "error", "ckpt") and isinstance(text, str), "kind")
    if kind == "ckpt":
        _expect(ckpt is not None, "checkpoint missing")
        return "ckpt", (ckpt, text)
    return kind, text
