"""Crop, flip and cutout (distnet/data/augment.py): hand-made images, W-invariance,
determinism from (seed, epoch, index), resume, and flip test-time augmentation."""
import numpy as np
import pytest

from distnet.data.augment import (ImageAugment, crop_offsets, cutout, cutout_centres, flip_averaged_logits,
                                  flip_choices, hflip, random_crop, translate)
from distnet.data.loader import GlobalBatchLoader
from distnet.data.synthetic import synthetic
from distnet.errors import UserError

IMG = np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3)  # [[0 1 2] [3 4 5] [6 7 8]]
FILL = np.array([-9.0], dtype=np.float32)


@pytest.mark.parametrize("offset,expected", [
    ((1, 1), [[0, 1, 2], [3, 4, 5], [6, 7, 8]]),  # the centre window: no move
    ((0, 0), [[4, 3, 4], [1, 0, 1], [4, 3, 4]]),  # reflect pads row -1 = row 1, col -1 = col 1
    ((2, 1), [[3, 4, 5], [6, 7, 8], [3, 4, 5]]),  # row 3 = row 1
    ((0, 2), [[4, 5, 4], [1, 2, 1], [4, 5, 4]]),
])
def test_reflect_crop_by_hand(offset, expected):
    out = random_crop(IMG, np.array([offset]), 1, "reflect", FILL)
    np.testing.assert_array_equal(out[0, 0], expected)


@pytest.mark.parametrize("offset,expected", [
    ((0, 2), [[-9, -9, -9], [1, 2, -9], [4, 5, -9]]),
    ((2, 0), [[-9, 3, 4], [-9, 6, 7], [-9, -9, -9]]),
])
def test_zero_crop_by_hand_fills_background(offset, expected):
    out = random_crop(IMG, np.array([offset]), 1, "zero", FILL)
    np.testing.assert_array_equal(out[0, 0], expected)


def test_zero_crop_is_the_shift_of_the_same_offsets():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3, 8, 8)).astype(np.float32)
    fill = np.array([-1.0, -2.0, -3.0], dtype=np.float32)
    offsets = crop_offsets(50, 3, seed=1, epoch=0, index=0)
    cropped = random_crop(x, offsets, 3, "zero", fill)
    # window at (oy, ox) of the padded image = the image moved by (3 - oy, 3 - ox)
    np.testing.assert_array_equal(cropped, translate(x, 3 - offsets, fill))


def test_crop_offsets_cover_the_padding_range():
    off = crop_offsets(5000, 4, seed=0, epoch=0, index=0)
    assert off.min() == 0 and off.max() == 8 and len(np.unique(off[:, 0])) == 9


def test_flip_mirrors_only_the_chosen_images():
    x = np.stack([IMG[0], IMG[0] + 10])
    out = hflip(x, np.array([False, True]))
    np.testing.assert_array_equal(out[0, 0], IMG[0, 0])
    np.testing.assert_array_equal(out[1, 0], [[12, 11, 10], [15, 14, 13], [18, 17, 16]])
    np.testing.assert_array_equal(x[1, 0, 0], [10, 11, 12])  # the input is left alone
    frac = flip_choices(10000, seed=0, epoch=0, index=0).mean()
    assert 0.47 < frac < 0.53


def test_cutout_fills_the_right_square_per_channel():
    x = np.ones((2, 2, 6, 6), dtype=np.float32)
    fill = np.array([-5.0, 7.0], dtype=np.float32)
    out = cutout(x, np.array([[2, 3], [0, 0]]), 2, fill)
    want0 = np.ones((6, 6))
    want0[1:3, 2:4] = 0  # centre (2, 3), size 2: rows 1-2, cols 2-3
    want1 = np.ones((6, 6))
    want1[0:1, 0:1] = 0  # centre (0, 0): rows -1..0 clipped to row 0, cols likewise
    for c, value in enumerate(fill):
        np.testing.assert_array_equal(out[0, c], np.where(want0 == 0, value, 1))
        np.testing.assert_array_equal(out[1, c], np.where(want1 == 0, value, 1))
    odd = cutout(np.ones((1, 1, 6, 6), np.float32), np.array([[3, 3]]), 3, np.array([0.0]))
    assert odd[0, 0, 2:5, 2:5].sum() == 0 and odd.sum() == 36 - 9  # rows/cols 2-4


def test_cutout_centres_span_the_image():
    c = cutout_centres(5000, 32, 20, seed=0, epoch=0, index=0)
    assert c[:, 0].min() == 0 and c[:, 0].max() == 31 and c[:, 1].max() == 19


def _data(n=50, shape=(3, 8, 8)):
    return synthetic("train", n=n, shape=shape)


AUG = ImageAugment(crop=2, flip=True, cutout=3)


@pytest.mark.parametrize("world", [2, 3, 7, 25])
def test_union_of_rank_slices_is_the_single_rank_batch(world):
    data = _data()
    single = GlobalBatchLoader(data, 20, seed=3, augment=AUG)
    for epoch, index in [(0, 0), (1, 2)]:
        x1, y1, _ = single.batch(epoch, index)
        parts = [GlobalBatchLoader(data, 20, seed=3, rank=r, world=world, augment=AUG).batch(epoch, index)
                 for r in range(world)]
        assert any(len(p[1]) == 0 for p in parts) == (world > 20)
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x1)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), y1)


def test_augmentation_actually_changes_images_and_keeps_labels():
    data = _data()
    plain = GlobalBatchLoader(data, 20, seed=3).batch(0, 1)
    aug = GlobalBatchLoader(data, 20, seed=3, augment=AUG).batch(0, 1)
    np.testing.assert_array_equal(plain[1], aug[1])
    assert aug[0].shape == plain[0].shape and aug[0].dtype == plain[0].dtype
    changed = [not np.array_equal(a, b) for a, b in zip(aug[0], plain[0])]
    assert sum(changed) >= 15


def test_determined_by_seed_epoch_and_index():
    data = _data()
    a = GlobalBatchLoader(data, 20, seed=3, augment=AUG)
    b = GlobalBatchLoader(data, 20, seed=3, augment=AUG)
    np.testing.assert_array_equal(a.batch(1, 1)[0], b.batch(1, 1)[0])
    # the draws themselves depend on each of seed, epoch and index
    base = crop_offsets(64, 4, 3, 1, 1)
    for other in (crop_offsets(64, 4, 4, 1, 1), crop_offsets(64, 4, 3, 2, 1), crop_offsets(64, 4, 3, 1, 2)):
        assert not np.array_equal(base, other)
    # one transform's stream does not depend on whether another is on
    x = data.batch(np.arange(20))[0]
    fill = np.zeros(3, np.float32)
    kw = dict(seed=3, epoch=0, index=0, count=20, start=0, stop=20)
    crop_only = ImageAugment(crop=2)(x, fill, **kw)
    crop_flip = ImageAugment(crop=2, flip=True)(x, fill, **kw)
    flips = flip_choices(20, 3, 0, 0)
    np.testing.assert_array_equal(hflip(crop_only, flips), crop_flip)


def test_resume_sees_the_same_augmentation():
    """A loader built fresh at (epoch 2, index 1) -- as after a restart -- gives what a loader
    that walked every batch before it gave."""
    data = _data()
    walked = GlobalBatchLoader(data, 16, seed=5, rank=1, world=2, augment=AUG)
    seen = {}
    for epoch in range(3):
        for index in range(walked.steps_per_epoch):
            seen[epoch, index] = walked.batch(epoch, index)
    fresh = GlobalBatchLoader(data, 16, seed=5, rank=1, world=2, augment=AUG)
    for key in [(2, 1), (0, 3), (1, 0)]:
        x, y, n = fresh.batch(*key)
        np.testing.assert_array_equal(x, seen[key][0])
        np.testing.assert_array_equal(y, seen[key][1])


def test_zero_mode_uses_the_dataset_background():
    data = _data(n=40, shape=(1, 4, 4))
    loader = GlobalBatchLoader(data, 40, seed=0, shuffle=False, augment=ImageAugment(crop=4, crop_mode="zero"))
    x, _, _ = loader.batch(0, 0)
    background = -np.float32(data.mean[0]) / np.float32(data.std[0])
    offsets = crop_offsets(40, 4, 0, 0, 0)
    gone = (offsets == 0).any(axis=1) | (offsets == 8).any(axis=1)  # moved by all 4 pixels
    assert gone.sum() >= 5
    np.testing.assert_allclose(x[gone], background, rtol=1e-6)
    assert not np.allclose(x[~gone], background)


def test_bad_settings_are_user_errors():
    with pytest.raises(ValueError):
        ImageAugment(crop=-1)
    with pytest.raises(ValueError):
        ImageAugment(crop=2, crop_mode="wrap")
    with pytest.raises(UserError, match="larger than 8"):
        GlobalBatchLoader(_data(), 10, seed=0, augment=ImageAugment(crop=8))
    GlobalBatchLoader(_data(), 10, seed=0, augment=ImageAugment(crop=8, crop_mode="zero"))  # fine


def test_flip_averaged_logits():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 2 * 3 * 5)).astype(np.float32)
    buffer = np.empty((3, 4), np.float32)

    def model(x):  # a linear model that writes every output into the same buffer
        np.matmul(x.reshape(len(x), -1), w.T, out=buffer)
        return buffer

    x = rng.standard_normal((3, 2, 3, 5)).astype(np.float32)
    want = (x.reshape(3, -1) @ w.T + x[..., ::-1].reshape(3, -1) @ w.T) / 2
    np.testing.assert_allclose(flip_averaged_logits(model, x), want, rtol=1e-5, atol=1e-5)
    # a mirror-symmetric input gets its plain logits
    sym = x + x[..., ::-1]
    np.testing.assert_allclose(flip_averaged_logits(model, sym), sym.reshape(3, -1) @ w.T, rtol=1e-5, atol=1e-5)
