"""IDX reader/writer: round trips, and every kind of damaged file gives a one-line UserError."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from distnet.data import read_idx, write_idx
from distnet.data.idx import read_idx_pair
from distnet.errors import UserError

EMBEDDED = Path(__file__).resolve().parents[1] / "distnet" / "data" / "embedded"


def _images(n=7):
    return np.random.default_rng(1).integers(0, 256, size=(n, 5, 4), dtype=np.uint8)


def _labels(n=7):
    return (np.arange(n) % 10).astype(np.uint8)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, suffix):
    imgs, labs = _images(), _labels()
    write_idx(tmp_path / f"i{suffix}", imgs)
    write_idx(tmp_path / f"l{suffix}", labs)
    assert (tmp_path / f"i{suffix}").read_bytes().startswith(b"\x1f\x8b" if suffix else b"\x00\x00\x08\x03")
    got_i, got_l = read_idx_pair(tmp_path / f"i{suffix}", tmp_path / f"l{suffix}")
    np.testing.assert_array_equal(got_i, imgs)
    np.testing.assert_array_equal(got_l, labs)
    assert got_i.dtype == np.uint8 and got_i.shape == (7, 5, 4)


def test_gzip_detected_by_content_not_name(tmp_path):
    write_idx(tmp_path / "x.gz", _labels())
    (tmp_path / "x.gz").rename(tmp_path / "plainname")
    np.testing.assert_array_equal(read_idx(tmp_path / "plainname", ndim=1), _labels())


def test_real_labels_file_header():
    labels = read_idx(EMBEDDED / "t10k-labels-idx1-ubyte.gz", ndim=1)
    assert labels.shape == (10000,) and labels.max() == 9


def _raw_images():
    arr = _images()
    return bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape) + arr.tobytes()


def _set_count(data, count):
    return data[:4] + count.to_bytes(4, "big") + data[8:]


# name -> (file bytes, expected ndim, words the message must contain)
CORRUPTIONS = {
    "truncated": (lambda: _raw_images()[:-10], 3, "truncated"),
    "truncated_header": (lambda: _raw_images()[:9], 3, "truncated"),
    "empty": (lambda: b"", 3, "not an IDX file"),
    "wrong_magic": (lambda: b"\x12\x34" + _raw_images()[2:], 3, "bad magic"),
    "labels_magic_for_images": (lambda: bytes([0, 0, 8, 1]) + _raw_images()[4:], 3, "expected 3"),
    "wrong_element_type": (lambda: bytes([0, 0, 0x0D, 3]) + _raw_images()[4:], 3, "element type 0x0d"),
    "count_too_big": (lambda: _set_count(_raw_images(), 8), 3, "header says 8 images of 5x4"),
    "count_too_small": (lambda: _set_count(_raw_images(), 6), 3, "trailing garbage"),
    "trailing_garbage": (lambda: _raw_images() + b"\x00junk", 3, "5 bytes of trailing garbage"),
    "trailing_garbage_inside_gzip": (lambda: gzip.compress(_raw_images() + b"xyz"), 3, "after gunzip"),
    "garbage_bytes": (lambda: np.random.default_rng(3).bytes(500), 3, "not an IDX file"),
    "truncated_gzip": (lambda: gzip.compress(_raw_images())[:-30], 3, "truncated gzip"),
    "corrupt_gzip": (
        lambda: (lambda g: g[:20] + bytes(b ^ 0xFF for b in g[20:60]) + g[60:])(gzip.compress(_raw_images())),
        3,
        "corrupt",  # flipped deflate bytes may decode to a nonsense header before zlib notices
    ),
    "garbage_after_gzip": (lambda: gzip.compress(_raw_images()) + b"not gzip at all", 3, "corrupt gzip"),
    "bad_gzip_header": (lambda: b"\x1f\x8b\x09" + b"\x00" * 40, 3, "corrupt gzip"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_file_gives_one_line_user_error(tmp_path, case):
    make, ndim, words = CORRUPTIONS[case]
    path = tmp_path / f"{case}-images-idx3-ubyte.gz"
    path.write_bytes(make())
    with pytest.raises(UserError) as info:
        read_idx(path, ndim=ndim)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    assert words in message


def test_truncated_real_mnist_message_names_file_and_sizes(tmp_path):
    raw = gzip.decompress((EMBEDDED / "t10k-images-idx3-ubyte.gz").read_bytes())
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(raw[:16 + 1234]))
    with pytest.raises(UserError) as info:
        read_idx(path, ndim=3)
    assert str(info.value) == (
        f"{path}: truncated: header says 10000 images of 28x28 (7840000 bytes)"
        " but file holds 1234 bytes of data after gunzip"
    )


def test_mismatched_pair(tmp_path):
    write_idx(tmp_path / "imgs.gz", _images(7))
    write_idx(tmp_path / "labs.gz", _labels(9))
    with pytest.raises(UserError) as info:
        read_idx_pair(tmp_path / "imgs.gz", tmp_path / "labs.gz")
    message = str(info.value)
    assert "labs.gz" in message and "imgs.gz" in message and "9 labels" in message and "7 images" in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="nothere.gz: file not found"):
        read_idx(tmp_path / "nothere.gz")


def test_write_rejects_non_uint8(tmp_path):
    with pytest.raises(ValueError):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.float32))


def test_a_flipped_bit_in_the_deflate_stream_is_reported_as_corrupt(tmp_path):
    """A bit flipped inside the compressed data inflates to a different length or header as
    often as to the wrong bytes; the message must name the real fault (the gzip CRC fails),
    not its symptom ("trailing garbage", "unsupported IDX element type"); a flip that hides
    the end-of-stream marker reads as a cut download, which gzip cannot tell apart from one.
    Every 5th byte of
    the real test-labels file's deflate data (after its 33-byte gzip header) is tried."""
    good = (EMBEDDED / "t10k-labels-idx1-ubyte.gz").read_bytes()
    expected = read_idx(EMBEDDED / "t10k-labels-idx1-ubyte.gz")
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    outcomes = set()
    for pos in range(40, len(good) - 8, 5):
        damaged = bytearray(good)
        damaged[pos] ^= 0x10
        path.write_bytes(bytes(damaged))
        try:
            np.testing.assert_array_equal(read_idx(path, ndim=1), expected)  # a flip deflate ignores
            outcomes.add("same data")
        except UserError as exc:
            message = str(exc)
            assert message.startswith((f"{path}: corrupt gzip data: ", f"{path}: truncated gzip data")), message
            assert "\n" not in message
            outcomes.add(message.split(":")[-1].strip().split(" ")[0])
    assert "CRC" in outcomes, outcomes
