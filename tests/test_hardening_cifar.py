"""Hostile CIFAR-10 python batches and tarballs (issue 12, items 1 and 3, 5: "Tarball
traversal", "Unpickler globals").

The pickles are assembled opcode by opcode (``_dump``) so a test can say exactly what a
crafted file holds: the official form, and the forgeries that make numpy's own dtype and
ndarray ``__setstate__`` corrupt memory when the real classes are handed to pickle.
"""

import gzip
import importlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest

from conftest import REPO, run_train
from distnet.data import cifar
from distnet.errors import UserError

# --------------------------------------------------------------------------- a tiny pickle assembler


class G:
    """A global reference (pickle's GLOBAL opcode)."""

    def __init__(self, module, name):
        self.module, self.name = module, name


class Call:
    """``fn(*args)`` (REDUCE), then ``__setstate__(state)`` (BUILD) if a state is given."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state


class Py2Str(bytes):
    """A Python 2 ``str``: written as BINSTRING, which ``encoding="bytes"`` reads back as bytes."""


class NewObj:
    """``cls.__new__(cls, *args)`` (NEWOBJ): makes an instance without calling ``__init__``."""

    def __init__(self, cls, args=()):
        self.cls, self.args = cls, args


def _dump(obj) -> bytes:
    out = bytearray(b"\x80\x02")

    def w(o):
        if o is None:
            out.extend(b"N")
        elif o is True:
            out.extend(b"\x88")
        elif o is False:
            out.extend(b"\x89")
        elif isinstance(o, int):
            if 0 <= o < 256:
                out.extend(b"K" + bytes([o]))
            elif -(2**31) <= o < 2**31:
                out.extend(b"J" + struct.pack("<i", o))
            else:
                n = (o.bit_length() + 8) // 8
                out.extend(b"\x8a" + bytes([n]) + o.to_bytes(n, "little", signed=True))
        elif isinstance(o, float):
            out.extend(b"G" + struct.pack(">d", o))
        elif isinstance(o, Py2Str):
            out.extend(b"T" + struct.pack("<i", len(o)) + o)
        elif isinstance(o, bytes):
            out.extend(b"B" + struct.pack("<I", len(o)) + o)
        elif isinstance(o, str):
            b = o.encode()
            out.extend(b"X" + struct.pack("<I", len(b)) + b)
        elif isinstance(o, tuple):
            out.extend(b"(")
            for x in o:
                w(x)
            out.extend(b"t")
        elif isinstance(o, list):
            out.extend(b"](")
            for x in o:
                w(x)
            out.extend(b"e")
        elif isinstance(o, dict):
            out.extend(b"}(")
            for k, v in o.items():
                w(k)
                w(v)
            out.extend(b"u")
        elif isinstance(o, G):
            out.extend(f"c{o.module}\n{o.name}\n".encode())
        elif isinstance(o, Call):
            w(o.fn)
            w(tuple(o.args))
            out.extend(b"R")
            if o.state is not None:
                w(o.state)
                out.extend(b"b")
        elif isinstance(o, NewObj):
            w(o.cls)
            w(tuple(o.args))
            out.extend(b"\x81")
        else:
            raise TypeError(o)

    w(obj)
    out.extend(b".")
    return bytes(out)


MA1, MA2 = "numpy.core.multiarray", "numpy._core.multiarray"  # numpy 1.x and 2.x spellings
U8_STATE = (3, "|", None, None, None, -1, -1, 0)


def dtype(code="u1", state=U8_STATE, align=False, copy=True):
    return Call(G("numpy", "dtype"), (code, align, copy), state)


def array(shape, dt, raw, fortran=False, module=MA1, version=1):
    return Call(G(module, "_reconstruct"), (G("numpy", "ndarray"), (0,), b"b"), (version, shape, dt, fortran, raw))


def batch(data, labels):
    return _dump({b"batch_label": b"crafted", b"labels": labels, b"data": data, b"filenames": []})


def _pixels(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, cifar.IMAGE_BYTES), dtype=np.uint8)


# The 129-byte attack of issue 12 in spirit: a V8 dtype whose one field is an object (flags 1:
# "holds references"), laid over 8 chosen bytes; freeing the array decrefs 0x4141414141414141.
OBJECT_DTYPE = dtype("O", (3, "|", None, None, None, -1, -1, 63))
SEGFAULT = batch(array((1,), dtype("V8", (3, "|", None, ("f",), {"f": (OBJECT_DTYPE, 0)}, 8, 1, 1)), b"A" * 8), [0])

# --------------------------------------------------------------------------- the official forms still load


@pytest.mark.parametrize("module", [MA1, MA2])
def test_hand_built_official_form_matches_numpy_and_loads(module):
    px, labels = _pixels(3), [3, 1, 4]
    data = batch(array((3, cifar.IMAGE_BYTES), dtype(), px.tobytes(), module=module), labels)
    real = pickle.loads(data, encoding="bytes")  # what numpy itself makes of these bytes
    assert real[b"data"].dtype == np.uint8 and np.array_equal(real[b"data"], px)
    images, got = cifar.parse_python_batch(data, "b")
    assert images.shape == (3, 3, 32, 32) and np.array_equal(images.reshape(3, -1), px)
    assert got.dtype == np.int64 and got.tolist() == labels


def test_protocol5_pickle_and_plain_bytes_and_row_lists_load():
    px = _pixels(4, seed=1)
    for payload in (
        pickle.dumps({b"data": px, b"labels": [0, 1, 2, 9]}, protocol=5),  # numpy's _frombuffer form
        batch(px.tobytes(), [0, 1, 2, 9]),
        batch([bytes(r) for r in px], [0, 1, 2, 9]),
    ):
        images, labels = cifar.parse_python_batch(payload, "b")
        assert np.array_equal(images.reshape(4, -1), px) and labels.tolist() == [0, 1, 2, 9]


# --------------------------------------------------------------------------- crafted pickles are refused

N = 2
RAW = _pixels(N).tobytes()
CRAFTED = {
    "object-field-dtype": SEGFAULT,
    "field-past-the-end": batch(array((1,), dtype("V1", (3, "|", None, ("f",), {"f": (dtype("<i8", None), 1000)}, 1, 1, 0)), b"x"), [0]),
    "u1-args-forged-fields-state": batch(array((N, 3072), dtype("u1", (3, "|", None, ("f",), {"f": (dtype("<i8", None), 1000)}, 1, 1, 0)), RAW), [0] * N),
    "u1-args-object-flags": batch(array((N, 3072), dtype("u1", (3, "|", None, None, None, -1, -1, 1)), RAW), [0] * N),
    "dtype-state-version-2": batch(array((N, 3072), dtype("u1", (2, "|", None, None, None, -1, -1, 0)), RAW), [0] * N),
    "aligned-dtype": batch(array((N, 3072), dtype(align=True), RAW), [0] * N),
    "uint16": batch(array((N, 1536), dtype("<u2", (3, "<", None, None, None, -1, -1, 0)), RAW), [0] * N),
    "float64": batch(array((N, 384), dtype("<f8", (3, "<", None, None, None, -1, -1, 0)), RAW), [0] * N),
    "dtype-without-init": batch(array((N, 3072), NewObj(G("numpy", "dtype")), RAW), [0] * N),
    "dtype-not-a-dtype": batch(array((N, 3072), b"u1", RAW), [0] * N),
    "huge-shape-no-bytes": batch(array((2**40, 3072), dtype(), b""), [0]),
    "empty-data-claiming-10000": batch(array((10000, 3072), dtype(), b""), [0] * 10000),
    "zero-rows": batch(array((0, 3072), dtype(), b""), []),
    "short-bytes": batch(array((N, 3072), dtype(), RAW[:-1]), [0] * N),
    "long-bytes": batch(array((N, 3072), dtype(), RAW + b"\0"), [0] * N),
    "bytes-as-list": batch(array((1, 3072), dtype(), [0] * 3072), [0]),
    "three-dims": batch(array((N, 3, 1024), dtype(), RAW), [0] * N),
    "shape-a-list": batch(array([N, 3072], dtype(), RAW), [0] * N),
    "shape-of-bools": batch(array((True, 3072), dtype(), RAW[:3072]), [0]),
    "fortran": batch(array((N, 3072), dtype(), RAW, fortran=True), [0] * N),
    "array-state-version-2": batch(array((N, 3072), dtype(), RAW, version=2), [0] * N),
    "array-state-4-tuple": batch(Call(G(MA1, "_reconstruct"), (G("numpy", "ndarray"), (0,), b"b"), ((N, 3072), dtype(), False, RAW)), [0] * N),
    "array-without-state": batch(Call(G(MA1, "_reconstruct"), (G("numpy", "ndarray"), (0,), b"b")), [0]),
    "reconstruct-other-class": batch(Call(G(MA1, "_reconstruct"), (G("numpy", "dtype"), (0,), b"b"), (1, (1, 3072), dtype(), False, RAW[:3072])), [0]),
    "reconstruct-other-shape": batch(Call(G(MA1, "_reconstruct"), (G("numpy", "ndarray"), (5,), b"b"), (1, (1, 3072), dtype(), False, RAW[:3072])), [0]),
    "ndarray-called-directly": batch(Call(G("numpy", "ndarray"), ((N, 3072),)), [0] * N),
    "zero-rows-one-label": batch(array((0, 3072), dtype(), b""), [0]),
    "array-state-6-tuple": batch(Call(G(MA1, "_reconstruct"), (G("numpy", "ndarray"), (0,), b"b"), (1, (1, 3072), dtype(), False, RAW[:3072], None)), [0]),
    "dtype-one-arg": batch(array((1, 3072), Call(G("numpy", "dtype"), ("u1",), U8_STATE), RAW[:3072]), [0]),
    "dtype-copy-off": batch(array((1, 3072), dtype(copy=False), RAW[:3072]), [0]),
    "dtype-without-state": batch(array((1, 3072), Call(G("numpy", "dtype"), ("u1", False, True)), RAW[:3072]), [0]),
    "dtype-align-float": batch(array((1, 3072), dtype(align=0.0), RAW[:3072]), [0]),
    "dtype-pipe-u1": batch(array((1, 3072), dtype("|u1"), RAW[:3072]), [0]),
    "rows-vs-labels": batch(array((N, 3072), dtype(), RAW), [0] * (N + 1)),
    "labels-2-to-the-70": batch(array((1, 3072), dtype(), RAW[:3072]), [2**70]),
    "label-negative": batch(array((1, 3072), dtype(), RAW[:3072]), [-1]),
    "label-10": batch(array((1, 3072), dtype(), RAW[:3072]), [10]),
    "label-bool": batch(array((1, 3072), dtype(), RAW[:3072]), [True]),
    "label-float": batch(array((1, 3072), dtype(), RAW[:3072]), [1.0]),
    "labels-a-dict": batch(array((1, 3072), dtype(), RAW[:3072]), {0: 0}),
    "labels-bytes": batch(array((1, 3072), dtype(), RAW[:3072]), b"\x00"),
    "labels-empty": batch(b"", []),
    "too-many-labels": batch(b"", [0] * 60001),
    "data-a-str": batch("x" * 3072, [0]),
    "data-a-dict": batch({b"x": RAW}, [0] * N),
    "data-rows-wrong-length": batch([RAW[:3071]], [0]),
    "flat-bytes-wrong-length": batch(RAW, [0]),
    "no-labels": _dump({b"data": RAW}),
    # 200,000 nested lists (400 KB): repr of them would exceed Python's recursion limit
    "deeply-nested-label": b"\x80\x02}(" + b"B\x06\x00\x00\x00labels" + b"]" * 200_001 + b"a" * 200_000
                           + b"B\x04\x00\x00\x00data" + _dump(RAW[:3072])[2:-1] + b"u.",
    "deeply-nested-shape": b"\x80\x02}(" + _dump(b"labels")[2:-1] + _dump([0])[2:-1] + _dump(b"data")[2:-1]
                           + _dump(G(MA1, "_reconstruct"))[2:-1] + _dump((G("numpy", "ndarray"), (0,), b"b"))[2:-1] + b"R"
                           + b"(K\x01" + b"]" * 200_001 + b"a" * 200_000 + _dump(dtype())[2:-1] + b"\x89" + _dump(RAW[:3072])[2:-1]
                           + b"tb" + b"u.",
    "not-a-dict": _dump([RAW, [0]]),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_pickle_is_one_line_user_error(case, tmp_path):
    path = tmp_path / "data_batch_1"
    with pytest.raises(UserError) as info:
        cifar.parse_python_batch(CRAFTED[case], str(path))
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message and len(message) < 400


def test_refusal_messages_say_what_is_wrong():
    def msg(case):
        with pytest.raises(UserError) as info:
            cifar.parse_python_batch(CRAFTED[case], "f")
        return str(info.value)

    assert "not plain uint8" in msg("object-field-dtype")
    assert "not plain uint8" in msg("u1-args-forged-fields-state")
    assert "holds 0 bytes instead of 30720000" in msg("empty-data-claiming-10000")
    assert "at most 60000" in msg("huge-shape-no-bytes")
    assert "'data' is uint8 of shape (0, 3072)" in msg("zero-rows-one-label")
    assert "label 0 is 1180591620717411303424" in msg("labels-2-to-the-70")
    assert msg("rows-vs-labels") == "f: 2 images but 3 labels"
    assert "arguments numpy never writes" in msg("reconstruct-other-class")
    assert "arguments numpy never writes" in msg("reconstruct-other-shape")
    assert "needs a 'data' array and a 'labels' list" in msg("no-labels")
    assert "found a dict" in msg("labels-a-dict") and "found 0 entries" in msg("labels-empty")
    assert "'data' is a str" in msg("data-a-str")
    assert "unknown pickled state" in msg("array-state-6-tuple")
    assert "Fortran" in msg("fortran")
    with pytest.raises(UserError) as info:
        cifar.parse_python_batch(b"\x80\x02}q\x00(", "g")
    assert str(info.value) == "g: not a valid pickle: EOFError: Ran out of input"
    with pytest.raises(UserError) as info:
        cifar.parse_python_batch(b"\x80\x02" + b"(" * 10 + b"J", "h")  # cut inside an int
    assert str(info.value).startswith("h: not a valid pickle: ")


def test_batch_size_limit_is_inclusive(monkeypatch):
    data = batch(_pixels(1).tobytes(), [0])
    monkeypatch.setattr(cifar, "_MAX_MEMBER_BYTES", len(data))
    assert cifar.parse_python_batch(data, "b")[1].tolist() == [0]
    monkeypatch.setattr(cifar, "_MAX_MEMBER_BYTES", len(data) - 1)
    with pytest.raises(UserError, match=f"b: {len(data)} bytes is implausibly large for a CIFAR-10 batch"):
        cifar.parse_python_batch(data, "b")


def test_python2_official_form_with_py2_strings_loads():
    """As cPickle wrote the official batches: every str a py2 str (BINSTRING), raw pixels
    included, so bytes >= 0x80 only survive encoding='bytes'."""
    px = _pixels(2, seed=3)
    arr = Call(G(MA1, "_reconstruct"), (G("numpy", "ndarray"), (0,), Py2Str(b"b")),
               (1, (2, 3072), Call(G("numpy", "dtype"), (Py2Str(b"u1"), 0, 1), (3, Py2Str(b"|"), None, None, None, -1, -1, 0)),
                False, Py2Str(px.tobytes())))
    data = _dump({Py2Str(b"batch_label"): Py2Str(b"x"), Py2Str(b"labels"): [5, 6], Py2Str(b"data"): arr})
    images, labels = cifar.parse_python_batch(data, "b")
    assert np.array_equal(images.reshape(2, -1), px) and labels.tolist() == [5, 6]


def test_str_keys_and_one_image_load():
    px = _pixels(1, seed=4)
    images, labels = cifar.parse_python_batch(_dump({"data": array((1, 3072), dtype(), px.tobytes()), "labels": [9]}), "b")
    assert np.array_equal(images.reshape(1, -1), px) and labels.tolist() == [9]


def test_protocol5_fortran_array_is_refused():
    px = np.asfortranarray(_pixels(3, seed=2))
    with pytest.raises(UserError, match="order other than C"):
        cifar.parse_python_batch(pickle.dumps({b"data": px, b"labels": [0, 1, 2]}, protocol=5), "b")


def test_image_count_limit_is_inclusive(monkeypatch):
    monkeypatch.setattr(cifar, "_MAX_IMAGES", 3)
    px = _pixels(4, seed=5)
    for n in (3, 4):
        as_array = batch(array((n, 3072), dtype(), px[:n].tobytes()), [1] * n)
        as_bytes = batch(px[:n].tobytes(), [1] * n)
        if n == 3:
            assert cifar.parse_python_batch(as_array, "b")[0].shape == (3, 3, 32, 32)
            assert cifar.parse_python_batch(as_bytes, "b")[0].shape == (3, 3, 32, 32)
        else:
            with pytest.raises(UserError, match="1 to 3 integers, found 4 entries"):
                cifar.parse_python_batch(as_bytes, "b")
            with pytest.raises(UserError, match="at most 3"):
                cifar._array_from_record(cifar.restricted_loads(as_array, "b")[b"data"], 4, "b")


def _crash_script(payload: bytes, permissive: bool) -> str:
    return textwrap.dedent(f"""
        import pickle, sys
        data = {payload!r}
        if {permissive}:
            obj = pickle.loads(data, encoding="bytes")  # the real numpy classes build it
            del obj
        else:
            from distnet.data import cifar
            try:
                cifar.parse_python_batch(data, "b")
            except Exception as exc:
                print(type(exc).__name__)
        print("survived")
    """)


def test_object_field_pickle_really_crashes_real_numpy_but_not_our_reader():
    """The fixture is the real attack: with numpy's own classes it kills the process."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    real = subprocess.run([sys.executable, "-c", _crash_script(SEGFAULT, True)], env=env, capture_output=True, text=True, timeout=60)
    assert real.returncode < 0 and "survived" not in real.stdout  # killed by a signal (SIGSEGV)
    ours = subprocess.run([sys.executable, "-c", _crash_script(SEGFAULT, False)], env=env, capture_output=True, text=True, timeout=60)
    assert ours.returncode == 0 and ours.stdout.split() == ["UserError", "survived"]


def test_segfault_batch_through_the_cli_is_one_line_and_exit_2(tmp_path):
    folder = tmp_path / "data" / cifar.PY_FOLDER
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(SEGFAULT)
    result = run_train("--dataset", "cifar10", "--data-dir", tmp_path / "data", "--no-download",
                       "--model", "cifar-cnn", "--max-steps", "1", "--no-progress", timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distnet: error: ")
    assert str(folder / "data_batch_1") in lines[0] and "uint8" in lines[0]


# --------------------------------------------------------------------------- globals: only the stand-ins

OTHER_NUMPY_GLOBALS = [
    (MA2, "scalar"), (MA1, "scalar"), (MA2, "frombuffer"), (MA2, "array"), (MA2, "empty"),
    (MA2, "fromstring"), ("numpy._core.numeric", "frombuffer"), ("numpy", "frombuffer"), ("numpy", "load"),
    ("numpy", "uint8"), (MA2, "ndarray"), (MA2, "dtype"), ("numpy.core.multiarray", "_reconstructx"),
]


def _global_payload(module, name):
    # e.g. multiarray.scalar(dtype('u1'), b'\x07'): harmless, so the permissive run below is safe
    return batch(Call(G(module, name), (dtype(), b"\x07")), [0])


def _assert_refused(module, name):
    with pytest.raises(UserError, match=rf"refusing to unpickle {module}\.{name}:"):
        cifar.parse_python_batch(_global_payload(module, name), "b")


@pytest.mark.parametrize("module,name", OTHER_NUMPY_GLOBALS)
def test_numpy_globals_other_than_the_array_helpers_are_refused(module, name):
    _assert_refused(module, name)


def test_the_stand_ins_are_what_numpy_names_resolve_to():
    for module in (MA1, MA2):
        assert cifar._ALLOWED_GLOBALS[(module, "_reconstruct")] is cifar._reconstruct
    assert cifar._ALLOWED_GLOBALS[("numpy", "dtype")] is not np.dtype
    assert cifar._ALLOWED_GLOBALS[("numpy", "ndarray")] is not np.ndarray
    assert not any(getattr(v, "__module__", "").startswith("numpy") for v in cifar._ALLOWED_GLOBALS.values())


@pytest.mark.filterwarnings("ignore")  # numpy warns about the odd arguments it is handed
def test_an_allowlist_of_all_of_multiarray_would_fail_these_tests(monkeypatch):
    """The refusals above are what guards: admit the whole of numpy._core.multiarray (the
    planted bug of issue 12) and the assertions no longer hold."""
    multiarray = importlib.import_module(MA2)
    original = cifar._RestrictedUnpickler.find_class

    def permissive(self, module, name):
        if module in (MA1, MA2) and hasattr(multiarray, name):
            return getattr(multiarray, name)
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        return original(self, module, name)

    monkeypatch.setattr(cifar._RestrictedUnpickler, "find_class", permissive)
    admitted = [(m, n) for m, n in OTHER_NUMPY_GLOBALS if m in (MA1, MA2) and hasattr(multiarray, n)]
    assert len(admitted) >= 6
    for module, name in admitted:
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            _assert_refused(module, name)


# --------------------------------------------------------------------------- tarballs


def _tar_bytes(members, compress=True):
    """members: (name, bytes or None for a symlink)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w", **({"compresslevel": 1} if compress else {})) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _bin_batch(n=3, seed=0):
    px = _pixels(n, seed)
    labels = np.arange(n, dtype=np.uint8) % 10
    return np.concatenate([labels[:, None], px], axis=1).tobytes(), px, labels


def _everything_under(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("kind,name", [
    ("py", f"{cifar.PY_FOLDER}/../{cifar.PY_FOLDER}/test_batch"),
    ("py", "../test_batch"),
    ("py", "/tmp/test_batch"),
    ("bin", f"{cifar.BIN_FOLDER}/../../test_batch.bin"),
    ("bin", "../test_batch.bin"),
])
def test_wanted_member_behind_dotdot_is_refused_and_nothing_written(tmp_path, monkeypatch, kind, name):
    work = tmp_path / "work"
    data_dir = work / "data" / "inner"
    data_dir.mkdir(parents=True)
    monkeypatch.chdir(data_dir)
    if kind == "py":
        payload = batch(_pixels(2).tobytes(), [1, 2])
        tarball = data_dir / cifar.PY_TARBALL
    else:
        payload = _bin_batch()[0]
        tarball = data_dir / cifar.BIN_TARBALL
    tarball.write_bytes(_tar_bytes([(name, payload)]))
    with pytest.raises(UserError) as info:
        cifar.load_cifar10(data_dir, "test")
    message = str(info.value)
    assert message.startswith(f"{tarball}: refusing member") and name in message and "\n" not in message
    assert _everything_under(work) == ["data", "data/inner", f"data/inner/{tarball.name}"]


def test_unwanted_hostile_members_are_ignored_and_links_not_followed(tmp_path):
    good, px, labels = _bin_batch()
    tarball = tmp_path / cifar.BIN_TARBALL
    tarball.write_bytes(_tar_bytes([("../../escaped.bin", b"evil"), (f"{cifar.BIN_FOLDER}/test_batch.bin", None),
                                    (f"{cifar.BIN_FOLDER}/test_batch.bin", good)]))
    images, got = cifar.load_cifar10(tmp_path, "test")
    assert np.array_equal(images.reshape(3, -1), px) and np.array_equal(got, labels)
    assert _everything_under(tmp_path) == [tarball.name]


def test_reading_stops_once_the_wanted_members_are_found(tmp_path):
    """After test_batch.bin comes 1 MiB of incompressible junk, cut short: reading on would
    hit the truncated gzip stream (as the old reader did), stopping does not."""
    good, px, _ = _bin_batch()
    junk = np.random.default_rng(5).bytes(1 << 20)
    whole = _tar_bytes([(f"{cifar.BIN_FOLDER}/test_batch.bin", good), (f"{cifar.BIN_FOLDER}/junk", junk)])
    (tmp_path / cifar.BIN_TARBALL).write_bytes(whole[: len(whole) // 2])
    images, _ = cifar.load_cifar10(tmp_path, "test")
    assert np.array_equal(images.reshape(3, -1), px)
    with pytest.raises(UserError, match="cannot read tarball"):  # train needs members in the cut-off part
        cifar.load_cifar10(tmp_path, "train")


def test_member_count_is_capped(tmp_path):
    good = _bin_batch()[0]
    members = [(f"{cifar.BIN_FOLDER}/empty{i}", b"") for i in range(cifar._MAX_TAR_MEMBERS + 5)]
    tarball = tmp_path / cifar.BIN_TARBALL
    tarball.write_bytes(_tar_bytes(members + [(f"{cifar.BIN_FOLDER}/test_batch.bin", good)]))
    with pytest.raises(UserError) as info:
        cifar.load_cifar10(tmp_path, "test")
    assert str(info.value) == (f"{tarball}: more than {cifar._MAX_TAR_MEMBERS} members before finding"
                               " test_batch.bin; not an official CIFAR-10 archive")
    # One over the cap, the wanted member last: refused too.
    tarball.write_bytes(_tar_bytes(members[: cifar._MAX_TAR_MEMBERS] + [(f"{cifar.BIN_FOLDER}/test_batch.bin", good)]))
    with pytest.raises(UserError, match="more than 1000 members"):
        cifar.load_cifar10(tmp_path, "test")
    # Just under the cap still loads.
    tarball.write_bytes(_tar_bytes(members[: cifar._MAX_TAR_MEMBERS - 1] + [(f"{cifar.BIN_FOLDER}/test_batch.bin", good)]))
    assert cifar.load_cifar10(tmp_path, "test")[0].shape == (3, 3, 32, 32)


def test_oversized_batch_file_is_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "_MAX_MEMBER_BYTES", 1000)
    (tmp_path / "test_batch").write_bytes(b"\0" * 1001)
    with pytest.raises(UserError, match="test_batch: 1001 bytes is implausibly large"):
        cifar.load_cifar10(tmp_path, "test")


def test_member_size_limit_is_inclusive(tmp_path, monkeypatch):
    good = _bin_batch()[0]
    tarball = tmp_path / cifar.BIN_TARBALL
    tarball.write_bytes(_tar_bytes([(f"{cifar.BIN_FOLDER}/test_batch.bin", good)]))
    monkeypatch.setattr(cifar, "_MAX_MEMBER_BYTES", len(good))
    assert cifar.load_cifar10(tmp_path, "test")[0].shape == (3, 3, 32, 32)
    monkeypatch.setattr(cifar, "_MAX_MEMBER_BYTES", len(good) - 1)
    with pytest.raises(UserError) as info:
        cifar.load_cifar10(tmp_path, "test")
    assert str(info.value) == (f"{tarball}: member {cifar.BIN_FOLDER}/test_batch.bin is implausibly large"
                               f" ({len(good)} bytes)")
