"""The shared decoded cache (distnet/data/cache.py): one .npy copy per machine, memory-mapped.

Each safety rule has its test: the result equals a fresh decode byte for byte; a second load
maps the entry instead of decoding; a changed source is decoded again and its stale entry
goes; truncated, corrupted, foreign (pickled) or half-described entries are detected and
rebuilt; a cache folder that cannot be written falls back to memory; the data folder is
never written to; processes racing to build it end up mapping one file.
"""
import gzip
import json
import mmap
import multiprocessing
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from distnet.data import cache, load_dataset, write_idx
from distnet.data import registry
from distnet.data.idx import read_idx_pair
from distnet.data.loader import GlobalBatchLoader
from distnet.data.registry import embedded_dir


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("DISTNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("DISTNET_OFFLINE", "1")
    registry._load_cached.cache_clear()  # the in-process cache would hide the disk cache
    yield
    registry._load_cached.cache_clear()


def _mapped(arr) -> bool:
    """True if ``arr``'s memory is a file mapping (np.load(mmap_mode=...)), not a private copy."""
    base = arr
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def _entries(root: Path, label: str) -> list[Path]:
    return sorted(p for p in root.glob(f"{label}-*") if p.is_dir())


class Counting:
    """A build function that counts its calls and returns fixed arrays."""

    def __init__(self, n=12, value=3):
        self.calls = 0
        self.images = np.full((n, 1, 4, 4), value, np.uint8)
        self.images[:, 0, 0, 0] = np.arange(n)
        self.labels = np.arange(n, dtype=np.int64) % 10

    def __call__(self):
        self.calls += 1
        return self.images.copy(), self.labels.copy()


def _fake_mnist(folder: Path, n=20, value=7):
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.full((n, 28, 28), value, np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return folder


def test_real_mnist_from_the_cache_equals_a_fresh_decode_and_is_mapped(tmp_path):
    folder = embedded_dir()
    want_x, want_y = read_idx_pair(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
    first = load_dataset("mnist", "test")  # builds the entry
    registry._load_cached.cache_clear()
    second = load_dataset("mnist", "test")  # maps it
    for ds in (first, second):
        assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == np.uint8
        assert np.array_equal(ds.images[:, 0], want_x) and np.array_equal(ds.labels, want_y.astype(np.int64))
        assert _mapped(ds.images) and _mapped(ds.labels)
        assert not ds.images.flags.writeable and type(ds.images) is np.ndarray
    entries = _entries(tmp_path / "xdg" / "distnet" / "decoded", "mnist-test")
    assert len(entries) == 1
    assert sorted(p.name for p in entries[0].iterdir()) == ["images.npy", "labels.npy", "manifest.json"]
    # the batches the trainer sees are the same floats either way
    x_cached, _ = second.batch(np.arange(0, 10000, 7))
    x_fresh = (want_x[::7, None].astype(np.float32) / 255 - 0.1307) / 0.3081
    assert np.allclose(x_cached, x_fresh, atol=1e-5)


def test_second_load_maps_without_building(tmp_path):
    build = Counting()
    a = cache.decoded("toy-train", ["src"], build, cache_dir=tmp_path / "c", identity=[1, 2])
    b = cache.decoded("toy-train", ["src"], build, cache_dir=tmp_path / "c", identity=[1, 2])
    assert build.calls == 1
    assert np.array_equal(a[0], build.images) and np.array_equal(b[0], build.images)
    assert np.array_equal(b[1], build.labels) and b[1].dtype == np.int64
    assert _mapped(a[0]) and _mapped(b[0])


def test_changed_source_is_decoded_again_and_the_stale_entry_removed(tmp_path):
    folder = _fake_mnist(tmp_path / "d", value=1)
    root = tmp_path / "xdg" / "distnet" / "decoded"
    assert int(load_dataset("mnist", "test", data_dir=folder).images.max()) == 1
    old = _entries(root, "mnist-test")
    assert len(old) == 1
    registry._load_cached.cache_clear()
    images = folder / "t10k-images-idx3-ubyte.gz"
    write_idx(images, np.full((20, 28, 28), 9, np.uint8))  # same size, new pixels
    st = images.stat()
    os.utime(images, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))  # a later mtime
    ds = load_dataset("mnist", "test", data_dir=folder)
    assert int(ds.images.max()) == 9
    new = _entries(root, "mnist-test")
    assert len(new) == 1 and new != old  # replaced, not piled up


def test_another_folder_of_the_same_data_set_keeps_its_own_entry(tmp_path):
    a = _fake_mnist(tmp_path / "a", value=1)
    b = _fake_mnist(tmp_path / "b", value=2)
    assert int(load_dataset("mnist", "test", data_dir=a).images.max()) == 1
    assert int(load_dataset("mnist", "test", data_dir=b).images.max()) == 2
    assert len(_entries(tmp_path / "xdg" / "distnet" / "decoded", "mnist-test")) == 2


def _break_and_reload(tmp_path, damage, caplog):
    build = Counting()
    root = tmp_path / "c"
    cache.decoded("toy-test", ["s"], build, cache_dir=root)
    (entry,) = _entries(root, "toy-test")
    damage(entry)
    with caplog.at_level("WARNING", logger="distnet.data"):
        images, labels = cache.decoded("toy-test", ["s"], build, cache_dir=root)
    assert build.calls == 2, "the damaged entry must be rebuilt, not used"
    assert np.array_equal(images, build.images) and np.array_equal(labels, build.labels)
    assert _mapped(images)
    assert "rebuilding the decoded cache" in caplog.text
    assert len(_entries(root, "toy-test")) == 1 and not list(root.glob(".*"))
    # and the rebuilt entry is good: a third load builds nothing
    cache.decoded("toy-test", ["s"], build, cache_dir=root)
    assert build.calls == 2
    return caplog.text


def test_truncated_array_is_rebuilt(tmp_path, caplog):
    def truncate(entry):
        path = entry / "images.npy"
        path.write_bytes(path.read_bytes()[:-5])
    _break_and_reload(tmp_path, truncate, caplog)


def test_truncated_header_is_rebuilt(tmp_path, caplog):
    _break_and_reload(tmp_path, lambda e: (e / "labels.npy").write_bytes(b"\x93NUMPY\x01\x00"), caplog)


def test_trailing_bytes_are_rebuilt(tmp_path, caplog):
    def append(entry):
        with open(entry / "images.npy", "ab") as f:
            f.write(b"\0" * 16)
    _break_and_reload(tmp_path, append, caplog)


def test_flipped_pixel_is_caught_by_the_checksum(tmp_path, caplog):
    def flip(entry):
        path = entry / "images.npy"
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF  # same size, same header: only the CRC can tell
        path.write_bytes(bytes(data))
    assert "checksum mismatch" in _break_and_reload(tmp_path, flip, caplog)


def test_missing_or_garbled_manifest_is_rebuilt(tmp_path, caplog):
    _break_and_reload(tmp_path, lambda e: (e / "manifest.json").unlink(), caplog)
    caplog.clear()
    _break_and_reload(tmp_path / "2", lambda e: (e / "manifest.json").write_text("{not json"), caplog)


def test_manifest_that_disagrees_with_the_array_is_rebuilt(tmp_path, caplog):
    def reshape(entry):
        manifest = json.loads((entry / "manifest.json").read_text())
        manifest["images"]["shape"][0] += 1
        (entry / "manifest.json").write_text(json.dumps(manifest))
    _break_and_reload(tmp_path, reshape, caplog)


class _Trap:
    unpickled = False

    def __reduce__(self):
        return (_set_trap, ())


def _set_trap():
    _Trap.unpickled = True
    return 0


def test_a_pickled_array_in_the_cache_is_never_unpickled(tmp_path, caplog):
    def plant(entry):
        np.save(entry / "labels.npy", np.array([_Trap()] * 12, dtype=object), allow_pickle=True)
    _break_and_reload(tmp_path, plant, caplog)
    assert not _Trap.unpickled


def test_unwritable_cache_folder_falls_back_to_memory(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")  # fails for root too
    build = Counting()
    with caplog.at_level("WARNING", logger="distnet.data"):
        images, labels = cache.decoded("toy-train", ["s"], build, cache_dir=blocker / "decoded")
    assert build.calls == 1 and np.array_equal(images, build.images) and np.array_equal(labels, build.labels)
    assert not _mapped(images)
    assert "keeping the data in memory" in caplog.text


def test_unwritable_cache_folder_still_loads_a_data_set(tmp_path, monkeypatch):
    blocker = tmp_path / "xdg-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    folder = _fake_mnist(tmp_path / "d", value=5)
    ds = load_dataset("mnist", "test", data_dir=folder)
    assert len(ds) == 20 and int(ds.images.max()) == 5 and not _mapped(ds.images)


def test_the_data_folder_is_never_written(tmp_path):
    folder = _fake_mnist(tmp_path / "d")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    os.chmod(folder, 0o555)  # a read-only data folder (root could still write: check, too)
    try:
        ds = load_dataset("mnist", "test", data_dir=folder)
    finally:
        os.chmod(folder, 0o755)
    assert _mapped(ds.images)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before


def test_cache_false_decodes_in_memory(tmp_path):
    build = Counting()
    images, _ = cache.decoded("toy", ["s"], build, cache_dir=False)
    assert build.calls == 1 and not _mapped(images)
    assert not (tmp_path / "xdg").exists()


def _race(root, ready, out):
    class Slow(Counting):
        def __call__(self):
            time.sleep(0.3)  # every process finds no entry and builds
            return super().__call__()
    ready.wait()
    build = Slow()
    images, _ = cache.decoded("race-train", ["s"], build, cache_dir=root)
    with open("/proc/self/maps") as f:
        mapped = {line.split()[4] for line in f if "race-train-" in line and "images.npy" in line}
    out.put((build.calls, sorted(mapped), bool(np.array_equal(images, Counting().images))))


def test_racing_builders_all_map_the_one_entry_that_won(tmp_path):
    root = tmp_path / "c"
    ctx = multiprocessing.get_context("fork")
    ready, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(root, ready, out)) for _ in range(4)]
    for p in procs:
        p.start()
    ready.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert all(calls == 1 and same for calls, _, same in results)  # all built (they raced)...
    inodes = {tuple(mapped) for _, mapped, _ in results}
    assert len(inodes) == 1 and len(next(iter(inodes))) == 1  # ...and all map one file
    (entry,) = _entries(root, "race-train")
    assert os.stat(entry / "images.npy").st_ino == int(next(iter(inodes))[0])
    assert not list(root.glob(".*")), "temporary folders left behind"


def test_loader_and_evaluation_never_make_a_float_copy_of_the_data_set():
    """uint8 in the cache, floats per batch: a batch of 128 with the shift augmentation and
    an evaluation at batch 100 each allocate a few MB, where a float32 copy of the train set
    would be 188 MB (of the 3,000 test images evaluated here 9.4 MB)."""
    from distnet.evaluation import evaluate
    from distnet.nn import CrossEntropyLoss, build_model

    train, test = load_dataset("mnist", "train"), load_dataset("mnist", "test").subset(np.arange(3000))
    loader = GlobalBatchLoader(train, 128, seed=0, max_shift=2)
    model = build_model("mlp", train.input_shape, 10, seed=0)
    tracemalloc.start()
    try:
        loader.batch(0, 0)
        tracemalloc.reset_peak()
        loader.batch(0, 1)
        batch_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        evaluate(model, test, loss=CrossEntropyLoss(), batch_size=100)
        eval_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert batch_peak < 4 << 20, f"one loader batch allocated {batch_peak / 2**20:.1f} MB"
    assert eval_peak < 4 << 20, f"evaluation allocated {eval_peak / 2**20:.1f} MB"


def test_gzip_source_is_read_once_then_served_from_the_cache(tmp_path, monkeypatch):
    folder = _fake_mnist(tmp_path / "d", value=4)
    load_dataset("mnist", "test", data_dir=folder)
    registry._load_cached.cache_clear()

    def no_gunzip(*a, **k):
        raise AssertionError("decoded again although the cache holds it")
    monkeypatch.setattr(gzip, "GzipFile", no_gunzip)
    ds = load_dataset("mnist", "test", data_dir=folder)
    assert int(ds.images.max()) == 4 and _mapped(ds.images)
