"""Checkpoint files built by hand (issue 12, items 3 and 5): every field is covered by the
checksum, and every member's header is checked against the format before its data is read,
so huge declared shapes, deflate bombs and odd dtypes cost nothing and end in one line."""

import io
import json
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from distnet import checkpoint as ck
from distnet.errors import UserError

N = 10


def make():
    rng = np.random.default_rng(7)
    return ck.Checkpoint(params=rng.standard_normal(N).astype(np.float32),
                         optimizer={"lr": 0.1, "step": 7, "exp_avg": rng.standard_normal(N).astype(np.float32),
                                    "exp_avg_sq": rng.random(N).astype(np.float32)},
                         step=7, epoch=1, position=2, seed=3, config={"model": "lenet5", "batch_size": 64},
                         buffers=rng.standard_normal(4).astype(np.float32), meta={"task": "classification"})


def _arrays(path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _savez(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _refusal(path):
    with pytest.raises(UserError) as info:
        ck.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_round_trip_of_every_field(tmp_path):
    original = make()
    ck.save(original, tmp_path / "c.npz")
    got = ck.load(tmp_path / "c.npz")
    assert np.array_equal(got.params, original.params) and np.array_equal(got.buffers, original.buffers)
    assert set(got.optimizer) == set(original.optimizer)
    for key, value in original.optimizer.items():
        assert np.array_equal(got.optimizer[key], value)
    assert (got.step, got.epoch, got.position, got.seed) == (7, 1, 2, 3)
    assert got.config == original.config and got.meta == original.meta


# --------------------------------------------------------------------------- checksum coverage

# Each tampering is plausible on its own (right dtype and shape), so only the checksum can tell.
TAMPER = {
    "params": lambda a: {"params": a["params"] + np.float32(1)},
    "optim/lr": lambda a: {"optim/lr": np.array(0.2)},
    "optim/step": lambda a: {"optim/step": np.array(8)},
    "optim/exp_avg": lambda a: {"optim/exp_avg": a["optim/exp_avg"][::-1].copy()},
    "optim/exp_avg_sq": lambda a: {"optim/exp_avg_sq": a["optim/exp_avg_sq"] * np.float32(2)},
    "step": lambda a: {"step": np.array(8, dtype=np.int64)},
    "epoch": lambda a: {"epoch": np.array(2, dtype=np.int64)},
    "position": lambda a: {"position": np.array(3, dtype=np.int64)},
    "seed": lambda a: {"seed": np.array(4, dtype=np.int64)},
    "config": lambda a: {"config": np.array(json.dumps({"model": "lenet5", "batch_size": 65}, sort_keys=True))},
    "buffers": lambda a: {"buffers": a["buffers"] + np.float32(1)},
    "meta": lambda a: {"meta": np.array(json.dumps({"task": "regression"}))},
    "format_version": lambda a: {"format_version": np.array(1)},  # 1 is readable too
    "optim/ added": lambda a: {"optim/extra": np.array(1.0)},
    "optim/ dropped": lambda a: {"optim/exp_avg_sq": None},
    "optim/ renamed": lambda a: {"optim/exp_avg_sq": None, "optim/exp_avg_sq2": a["optim/exp_avg_sq"]},
    "params dtype": lambda a: {"step": np.array(7, dtype=np.int32)},  # same value, other dtype
}


def test_tamper_cases_cover_every_field():
    written = set(ck._to_arrays(make())) - {"checksum"}
    assert written <= set(TAMPER), written - set(TAMPER)


@pytest.mark.parametrize("field", sorted(TAMPER))
def test_tampering_with_any_field_fails_the_checksum(tmp_path, field):
    path = tmp_path / "c.npz"
    ck.save(make(), path)
    arrays = _arrays(path)
    for key, value in TAMPER[field](arrays).items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value
    _savez(path, arrays)
    assert "checksum mismatch" in _refusal(path)


def test_untampered_rewrite_still_loads(tmp_path):
    """The rewrite itself (np.savez of the same arrays) is not what the checksum objects to."""
    path = tmp_path / "c.npz"
    ck.save(make(), path)
    _savez(path, _arrays(path))
    assert ck.load(path).step == 7


# --------------------------------------------------------------------------- headers before data


def _npy_header(descr, shape, fortran=False):
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return f.getvalue()


def _npy(arr):
    f = io.BytesIO()
    np.save(f, arr, allow_pickle=False)
    return f.getvalue()


def _zip(path, members, deflate=()):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name), data,
                       compress_type=zipfile.ZIP_DEFLATED if name in deflate else zipfile.ZIP_STORED)


def _members_of(ckpt):
    return {f"{k}.npy": _npy(v) for k, v in ck._to_arrays(ckpt).items()}


def _peak(fn, *args):
    tracemalloc.start()
    try:
        try:
            fn(*args)
        except UserError as exc:
            return str(exc), tracemalloc.get_traced_memory()[1]
        return None, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_hand_built_zip_of_the_real_members_loads(tmp_path):
    _zip(tmp_path / "c.npz", _members_of(make()))
    assert ck.load(tmp_path / "c.npz").seed == 3


def test_member_declaring_a_huge_shape_is_refused_before_reading(tmp_path):
    members = _members_of(make())
    members["params.npy"] = _npy_header("<f4", (10_000_000_000,))  # 37 GiB declared, nothing held
    assert len(members["params.npy"]) < 300
    _zip(tmp_path / "c.npz", members)
    message, peak = _peak(ck.load, tmp_path / "c.npz")
    assert "member 'params' declares 40000000000 bytes of data but holds 0" in message
    assert peak < 1 << 20


def _zip_with_raw_deflate_member(path, members, name, header, n_zero_bytes):
    """A zip whose member ``name`` is ``header`` + ``n_zero_bytes`` zeros, deflated: the
    compressed stream is written as is, so the file stays small while the member inflates."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    crc = zlib.crc32(header)
    chunks = [comp.compress(header)]
    block = bytes(1 << 20)
    for _ in range(n_zero_bytes >> 20):
        chunks.append(comp.compress(block))
        crc = zlib.crc32(block, crc)
    chunks.append(comp.flush())
    stream = b"".join(chunks)
    _zip(path, {k: v for k, v in members.items() if k != name})
    with zipfile.ZipFile(path, "a") as z:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.CRC, info.compress_size, info.file_size = crc, len(stream), len(header) + (n_zero_bytes >> 20 << 20)
        # write the local header and the already-compressed stream by hand
        z.fp.seek(z.start_dir)
        info.header_offset = z.fp.tell()
        z.fp.write(info.FileHeader(False))
        z.fp.write(stream)
        z.start_dir = z.fp.tell()
        z.filelist.append(info)
        z.NameToInfo[name] = info
        z._didModify = True
    return len(stream)


def test_real_deflate_bomb_member_is_refused_within_bounded_memory(tmp_path):
    members = _members_of(make())
    path = tmp_path / "bomb.npz"
    n = 160 << 20  # 160 Mi float32 = 640 MiB inflated
    size = _zip_with_raw_deflate_member(path, members, "params.npy", _npy_header("<f4", (n,)), 4 * n)
    assert size < 1 << 20 and path.stat().st_size < 1 << 20
    with zipfile.ZipFile(path) as z:  # the fixture really is a bomb: zipfile would inflate it
        with z.open("params.npy") as f:
            assert len(f.read(1 << 20)) == 1 << 20
    message, peak = _peak(ck.load, path)
    assert "member 'params' is compressed" in message and peak < 1 << 20, (message, peak)


@pytest.mark.parametrize("change,needle", [
    ({"format_version.npy": _npy(np.array([2, 2]))}, "'format_version' must be a single integer"),
    ({"format_version.npy": _npy(np.array(2.0))}, "'format_version' must be a single integer"),
    ({"step.npy": _npy(np.array([7]))}, "'step' must be a single integer"),
    ({"seed.npy": _npy(np.array("3"))}, "'seed' must be a single integer"),
    ({"config.npy": _npy(np.array([b"{}"]))}, "'config' must be a single string"),
    ({"meta.npy": _npy(np.array(["{}", "{}"]))}, "'meta' must be a single string"),
    ({"checksum.npy": _npy(np.array("abc"))}, "'checksum' must be a 64-character SHA-256"),
    ({"params.npy": _npy(np.zeros((2, 5), np.float32))}, "'params' must be a flat float32 vector"),
    ({"params.npy": _npy(np.zeros(N, np.float64))}, "'params' must be a flat float32 vector"),
    ({"params.npy": _npy(np.zeros(N, ">f4"))}, "'params' must be a flat float32 vector"),
    ({"buffers.npy": _npy(np.zeros(4, np.float16))}, "'buffers' must be a flat float32 vector"),
    ({"optim/exp_avg.npy": _npy(np.zeros(N + 1, np.float32))}, "one per parameter (10) or one per buffer (4)"),
    ({"optim/exp_avg.npy": _npy(np.zeros((2, 5), np.float32))}, "one per parameter (10) or one per buffer (4)"),
    ({"optim/exp_avg.npy": _npy(np.array("x"))}, "'optim/exp_avg' must be numbers"),
    ({"optim/exp_avg.npy": _npy(np.zeros(N, [("a", "<f4")]))}, "is not a plain array"),
    ({"params.npy": _npy_header("|O", (N,)) + bytes(8 * N)}, "is not a plain array"),
    ({"params.npy": _npy_header("<f4", (N,), fortran=True) + bytes(4 * N)}, "is not a plain array"),
    ({"params.npy": _npy(np.zeros(N, np.float32)) + b"x"}, "declares 40 bytes of data but holds 41"),
    ({"params.npy": _npy(np.zeros(N, np.float32))[:-1]}, "declares 40 bytes of data but holds 39"),
    ({"evil.npy": _npy(np.array(1))}, "unexpected member 'evil.npy'"),
    ({"optim/../x.npy": _npy(np.array(1))}, "unexpected member 'optim/../x.npy'"),
    ({"readme.txt": b"hello"}, "unexpected member 'readme.txt'"),
    ({"step.npy": None}, "missing step"),
    ({"params.npy": b"\x93NUMPY\x03\x00" + bytes(20)}, "has .npy format version (3, 0)"),
    ({"params.npy": b"not npy at all"}, "not a readable checkpoint"),
])
def test_bad_members_are_refused_by_header(tmp_path, change, needle):
    members = _members_of(make())
    for name, data in change.items():
        if data is None:
            del members[name]
        else:
            members[name] = data
    _zip(tmp_path / "c.npz", members)
    assert needle in _refusal(tmp_path / "c.npz")


def test_duplicate_member_is_refused(tmp_path):
    members = _members_of(make())
    path = tmp_path / "c.npz"
    _zip(path, members)
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("step.npy", _npy(np.array(8, dtype=np.int64)))
    assert "appears twice" in _refusal(path)


def test_too_many_members_are_refused_before_parsing_the_index(tmp_path, monkeypatch):
    members = _members_of(make())
    members.update({f"optim/k{i}.npy": _npy(np.array(1.0)) for i in range(ck._MAX_MEMBERS)})
    _zip(tmp_path / "c.npz", members)
    parsed = []
    real = zipfile.ZipFile._RealGetContents
    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", lambda self: parsed.append(1) or real(self))
    message = _refusal(tmp_path / "c.npz")
    assert f"more than a checkpoint has ({ck._MAX_MEMBERS} at most)" in message and parsed == []


def test_json_that_is_not_an_object_is_refused(tmp_path):
    bad = make()
    ck.save(bad, tmp_path / "c.npz")
    arrays = _arrays(tmp_path / "c.npz")
    arrays["config"] = np.array("[1, 2]")
    arrays["checksum"] = np.array(ck._checksum({k: v for k, v in arrays.items() if k != "checksum"}))
    _savez(tmp_path / "c.npz", arrays)
    assert "must be JSON objects" in _refusal(tmp_path / "c.npz")


def test_format_1_file_still_reads(tmp_path):
    arrays = {k: v for k, v in ck._to_arrays(make()).items() if k not in ("buffers", "meta", "checksum")}
    arrays["format_version"] = np.array(1)
    arrays["checksum"] = np.array(ck._checksum(arrays))
    _savez(tmp_path / "old.npz", arrays)
    got = ck.load(tmp_path / "old.npz")
    assert got.buffers.size == 0 and got.buffers.dtype == np.float32 and got.meta == {} and got.step == 7


@pytest.mark.parametrize("kind", ["huge-shape", "deflate-bomb", "vector-version"])
def test_hostile_checkpoint_through_resume_is_one_line_and_exit_2(tmp_path, kind):
    from conftest import run_train

    members = _members_of(make())
    path = tmp_path / "evil.npz"
    if kind == "huge-shape":
        members["params.npy"] = _npy_header("<f4", (10_000_000_000,))
        _zip(path, members)
    elif kind == "deflate-bomb":
        n = 160 << 20
        _zip_with_raw_deflate_member(path, members, "params.npy", _npy_header("<f4", (n,)), 4 * n)
    else:
        members["format_version.npy"] = _npy(np.array([2, 2]))
        _zip(path, members)
    r = run_train("--dataset", "synthetic", "--model", "mlp", "--no-progress", "--max-steps", "1",
                  "--resume", path, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"distnet: error: {path}: not a valid distnet checkpoint"), lines


def _resave_with_checksum(path, arrays):
    arrays = {k: v for k, v in arrays.items() if k != "checksum"}
    arrays["checksum"] = np.array(ck._checksum(arrays))
    _savez(path, arrays)


def test_text_length_limit_is_inclusive(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    ckpt = make()
    ckpt.config = {"k": "x" * 100}  # longer than the 64-character checksum
    ck.save(ckpt, path)
    size = len(json.dumps(ckpt.config, sort_keys=True))
    monkeypatch.setattr(ck, "_MAX_TEXT_CHARS", size)
    assert ck.load(path).config == ckpt.config
    monkeypatch.setattr(ck, "_MAX_TEXT_CHARS", size - 1)
    assert f"'config' must be a single string of at most {size - 1} characters" in _refusal(path)


def test_more_refusals_and_acceptances(tmp_path):
    path = tmp_path / "c.npz"
    members = _members_of(make())
    _zip(path, {**members, "config.npy": _npy(np.array(b"{}"))})
    assert "'config' must be a single string" in _refusal(path)
    _zip(path, {**members, "seed.txt": _npy(np.array(3))})
    assert "unexpected member 'seed.txt'" in _refusal(path)
    # a .npy 2.0 header (numpy writes one for headers over 64 KiB) reads like 1.0
    f = io.BytesIO()
    np.lib.format.write_array_header_2_0(f, {"descr": "<f4", "fortran_order": False, "shape": (N,)})
    _zip(path, {**members, "params.npy": f.getvalue() + make().params.tobytes()})
    assert np.array_equal(ck.load(path).params, make().params)
    # exactly the member cap is fine
    extra = {f"optim/k{i}.npy": _npy(np.array(1.0)) for i in range(ck._MAX_MEMBERS - len(members))}
    arrays = {k: v for k, v in ck._to_arrays(make()).items()}
    arrays.update({k[:-4]: np.array(1.0) for k in extra})
    _resave_with_checksum(path, arrays)
    with zipfile.ZipFile(path) as z:
        assert len(z.infolist()) == ck._MAX_MEMBERS
    assert len(ck.load(path).optimizer) == 4 + len(extra)


def test_format_2_needs_buffers_and_meta_and_valid_json(tmp_path):
    path = tmp_path / "c.npz"
    for drop in ("buffers", "meta"):
        arrays = dict(ck._to_arrays(make()))
        del arrays[drop]
        _resave_with_checksum(path, arrays)
        assert _refusal(path) == f"{path}: not a distnet checkpoint (missing buffers or meta)"
    arrays = dict(ck._to_arrays(make()))
    arrays["config"] = np.array("{not json")
    _resave_with_checksum(path, arrays)
    assert _refusal(path) == f"{path}: checkpoint configuration is not valid JSON"
    arrays["config"] = np.array("[" * 100_000 + "]" * 100_000)  # json.loads would recurse too deep
    _resave_with_checksum(path, arrays)
    assert _refusal(path) == f"{path}: checkpoint configuration is not valid JSON"
    path.write_bytes(b"not a zip at all" * 10)
    assert "truncated or corrupt: File is not a zip file" in _refusal(path)


def test_encrypted_member_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    _zip(path, _members_of(make()))
    data = bytearray(path.read_bytes())
    entry = data.find(b"PK\x01\x02")  # central-directory entries: flags at +8, name at +46
    while data[entry + 46: entry + 54] != b"step.npy":
        entry = data.find(b"PK\x01\x02", entry + 1)
        assert entry > 0
    data[entry + 8] |= 0x1  # general-purpose flag bit 0: encrypted
    path.write_bytes(bytes(data))
    assert "member 'step' is encrypted" in _refusal(path)


def test_optimizer_arrays_may_follow_params_or_buffers(tmp_path):
    """An EMA wrapper keeps ema_params (one per parameter) and ema_buffers (one per buffer,
    possibly none): both are part of the format."""
    ckpt = make()
    ckpt.optimizer.update(ema_params=ckpt.params * 2, ema_buffers=ckpt.buffers * 2, ema_updates=3)
    ck.save(ckpt, tmp_path / "a.npz")
    got = ck.load(tmp_path / "a.npz")
    assert np.array_equal(got.optimizer["ema_buffers"], ckpt.buffers * 2) and int(got.optimizer["ema_updates"]) == 3
    ckpt.buffers = np.zeros(0, np.float32)
    ckpt.optimizer["ema_buffers"] = np.zeros(0, np.float32)
    ck.save(ckpt, tmp_path / "b.npz")
    assert ck.load(tmp_path / "b.npz").optimizer["ema_buffers"].shape == (0,)
