"""--compress fp16 without MPI: the float16 encoding, error feedback on one rank, and refusals.

The multi-rank behaviour (reduce-scatter/allgather, identity over K steps, training, resume)
is in tests/mpi/test_compress.py."""
import subprocess
import sys

import numpy as np
import pytest

import distnet
from distnet import optim
from distnet.data import ArrayDataset
from distnet.distributed import DistributedOptimizer, SingleProcessCommunicator
from distnet.distributed.compress import FP16Compression, decode, encode
from distnet.nn import build_model


def roundtrip(rows):
    words = np.empty((rows.shape[0], 2 + rows.shape[1]), np.uint16)
    expected = encode(rows, words)
    got = decode(words, rows.dtype)
    np.testing.assert_array_equal(got, expected)  # the receiver decodes what the sender kept
    return got


def test_scaling_keeps_gradients_far_below_float16s_range():
    rng = np.random.default_rng(0)
    for magnitude in (1e-12, 1e-7, 1.0, 3e4, 1e9):  # plain float16: 0, subnormal, ..., inf
        rows = (rng.standard_normal((3, 500)) * magnitude).astype(np.float32)
        got = roundtrip(rows)
        assert np.isfinite(got).all()
        rel = np.abs(got - rows) / np.abs(rows).max(axis=1, keepdims=True)
        assert rel.max() <= 2.0 ** -11, (magnitude, rel.max())  # one float16 rounding of the row's top
    tiny = np.full((1, 4), 1e-7, np.float32)
    assert np.all(tiny.astype(np.float16).astype(np.float32) != tiny)  # plain float16 would lose it
    np.testing.assert_allclose(roundtrip(tiny), tiny, rtol=2.0 ** -11)


def test_zero_rows_and_non_finite_rows():
    rows = np.array([[0, 0, 0], [1e-3, np.inf, -2e-3]], np.float32)
    got = roundtrip(rows)
    np.testing.assert_array_equal(got[0], 0)
    assert got[1, 1] == np.inf  # a bad gradient still shows as one
    comm = SingleProcessCommunicator()
    grads = rows[1].copy()
    compression = FP16Compression(comm, grads)
    compression.allreduce(grads)
    assert np.isfinite(compression.residual).all()  # and does not poison the next steps


def test_error_feedback_on_one_rank_delivers_the_true_sum():
    comm = SingleProcessCommunicator()
    rng = np.random.default_rng(1)
    grads = np.zeros(1000, np.float32)
    compression = FP16Compression(comm, grads)
    delivered, true_sum = np.zeros(1000), np.zeros(1000)
    for _ in range(50):
        g = (rng.standard_normal(1000) * 1e-5).astype(np.float32)
        true_sum += g
        grads[:] = g
        compression.allreduce(grads)
        delivered += grads
    owed = compression.residual + compression.owner_residual[(0, 1000)]
    np.testing.assert_allclose(delivered + owed, true_sum, atol=1e-6 * np.abs(true_sum).max())
    assert np.abs(owed).max() <= 2 * 2.0 ** -11 * 5e-5


def test_a_slice_of_another_buffer_is_refused():
    compression = FP16Compression(SingleProcessCommunicator(), np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="slices of the gradient buffer"):
        compression.start(np.zeros(4, np.float32))


def tiny_data():
    rng = np.random.default_rng(0)
    return ArrayDataset(rng.standard_normal((32, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 32))


def test_fit_refuses_compress_with_deterministic_and_unknown_names():
    model = build_model("cnn2", (1, 28, 28), 10)
    for kwargs, message in (({"compress": "fp16", "deterministic": True}, "deterministic"),
                            ({"compress": "fp8"}, "none, fp16")):
        with pytest.raises(ValueError, match=message):
            distnet.fit(model, tiny_data(), loss="cross-entropy", optimizer=optim.SGD(model, lr=0.1),
                        batch_size=16, comm=SingleProcessCommunicator(), verbose=False, **kwargs)
    with pytest.raises(ValueError, match="compress"):
        DistributedOptimizer(optim.SGD(model, lr=0.1), model, SingleProcessCommunicator(), compress="int8")


def test_cli_refuses_compress_with_deterministic_in_one_line():
    r = subprocess.run([sys.executable, "-m", "distnet.train", "--compress", "fp16", "--deterministic"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "distnet: error: --compress: cannot be combined with --deterministic "
        "(float16 rounding depends on the world size)"]
