"""The global-batch loader and augmentation on one process (tests/mpi covers several)."""
import numpy as np
import pytest

from distnet.data.augment import batch_shifts, translate
from distnet.data.loader import GlobalBatchLoader, epoch_order, shard_bounds
from distnet.data.synthetic import synthetic


def test_order_depends_on_seed_and_epoch_only():
    a = epoch_order(100, seed=1, epoch=0)
    assert sorted(a) == list(range(100))
    np.testing.assert_array_equal(a, epoch_order(100, seed=1, epoch=0))
    assert not np.array_equal(a, epoch_order(100, seed=1, epoch=1))
    assert not np.array_equal(a, epoch_order(100, seed=2, epoch=0))


@pytest.mark.parametrize("count,world", [(10, 3), (2, 4), (0, 2), (64, 4), (7, 7)])
def test_shards_tile_the_batch(count, world):
    bounds = [shard_bounds(count, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_translate_moves_pixels_and_fills_background():
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    out = translate(x, np.array([[1, -2], [0, 0]]), fill=np.array([-9.0], dtype=np.float32))
    np.testing.assert_array_equal(out[1], x[1])
    expected = np.full((4, 4), -9.0, dtype=np.float32)
    expected[1:, :2] = x[0, 0, :3, 2:]  # down one row, left two columns
    np.testing.assert_array_equal(out[0, 0], expected)


def test_augmented_slices_do_not_depend_on_world_size():
    data = synthetic("train", n=50)
    single = GlobalBatchLoader(data, 20, seed=3, max_shift=2)
    x1, y1, _ = single.batch(1, 2)
    parts = [GlobalBatchLoader(data, 20, seed=3, rank=r, world=3, max_shift=2).batch(1, 2) for r in range(3)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x1)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y1)
    plain, _, _ = GlobalBatchLoader(data, 20, seed=3).batch(1, 2)
    assert not np.array_equal(plain, x1)
    assert np.abs(batch_shifts(1000, 2, 0, 0, 0)).max() == 2
