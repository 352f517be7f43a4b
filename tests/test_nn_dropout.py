"""Keyed dropout: a sample's mask depends on (seed, step, layer, global index), nothing else."""
import numpy as np
import pytest

from distnet import nn
from distnet.nn import randomness


def model(p=0.5, width=64):
    return nn.Sequential(nn.Linear(width, width, dtype=np.float64), nn.Dropout(p), nn.ReLU(), nn.Dropout(p))


def mask_of(net, x, *, seed=0, step=0, first_index=0, layer=1):
    """The mask the Dropout at position `layer` of net.modules() applied to x."""
    nn.set_sample_context(net, seed=seed, step=step, first_index=first_index)
    net(x)
    return list(net.modules())[layer + 1]._mask.copy()  # +1: modules() starts with the Sequential


def test_a_sample_gets_the_same_mask_wherever_it_sits():
    net = model()
    x = np.ones((8, 64))
    whole = mask_of(net, x, seed=3, step=7, first_index=0)
    part = mask_of(net, x[:4], seed=3, step=7, first_index=4)
    np.testing.assert_array_equal(whole[5], part[1])
    np.testing.assert_array_equal(whole[4:], part)
    assert not np.array_equal(whole[5], whole[4])  # and rows differ from each other


def test_the_second_dropout_is_keyed_the_same_way():
    net = model()
    x = np.ones((8, 64))
    nn.set_sample_context(net, seed=1, step=2, first_index=0)
    net(x)
    whole = net[3]._mask.copy()
    nn.set_sample_context(net, seed=1, step=2, first_index=6)
    net(x[:2])
    np.testing.assert_array_equal(net[3]._mask, whole[6:])


@pytest.mark.parametrize("change", [dict(step=1), dict(seed=1), dict(layer=3)])
def test_steps_layers_and_seeds_give_different_masks(change):
    net = model()
    x = np.ones((8, 64))
    base = mask_of(net, x)
    args = dict(seed=0, step=0, layer=1) | change
    other = mask_of(net, x, **args)
    assert not np.array_equal(base, other)
    assert 0.35 < np.mean(base == other) < 0.65  # independent masks agree about half the time


def test_keep_rate_is_one_minus_p():
    shape, p = (200, 500), 0.3
    keep = randomness.keep_mask(randomness.stream_key(5, 6, 7), 0, shape, p)
    assert abs(keep.mean() - (1 - p)) < 4 * np.sqrt(p * (1 - p) / keep.size)  # 4 sigma
    # no structure along either axis: per-row and per-column rates spread as binomials do
    assert abs(keep.mean(axis=1).std() - np.sqrt(p * (1 - p) / shape[1])) < 0.01
    assert abs(keep.mean(axis=0).std() - np.sqrt(p * (1 - p) / shape[0])) < 0.01


def test_training_output_is_the_scaled_mask():
    net = model(p=0.25)
    drop = net[1]
    x = np.random.default_rng(0).standard_normal((4, 64))
    nn.set_sample_context(net, seed=0, step=0, first_index=0)
    y = drop(x)
    keep = randomness.keep_mask(randomness.stream_key(0, 0, 2), 0, x.shape, 0.25)
    np.testing.assert_allclose(y, x * keep / 0.75, rtol=1e-15)
    g = np.random.default_rng(1).standard_normal(x.shape)
    np.testing.assert_allclose(drop.backward(g), g * keep / 0.75, rtol=1e-15)


def test_eval_is_identity_and_keeps_the_context():
    net = model()
    x = np.random.default_rng(0).standard_normal((4, 64))
    nn.set_sample_context(net, seed=0, step=0, first_index=0)
    net[1].eval()
    assert net[1](x) is x
    np.testing.assert_array_equal(net[1].backward(x), x)
    net[1].train()
    np.testing.assert_array_equal(net[1](x) != 0, randomness.keep_mask(randomness.stream_key(0, 0, 2), 0, x.shape, 0.5))


def test_context_is_used_once_then_falls_back_to_the_rng():
    drop = nn.Dropout(0.5, rng=np.random.default_rng(42))
    x = np.ones((6, 10))
    nn.set_sample_context(drop, seed=0, step=0, first_index=0)  # a bare layer is layer 0
    keyed = drop(x).copy()
    np.testing.assert_array_equal(keyed != 0, randomness.keep_mask(randomness.stream_key(0, 0, 0), 0, x.shape, 0.5))
    assert drop.sample_context is None
    fallback = drop(x)
    expected = np.random.default_rng(42).random(x.shape, dtype=np.float32) >= 0.5
    np.testing.assert_array_equal(fallback != 0, expected)


def test_without_context_it_draws_from_its_rng():
    a = nn.Dropout(0.5, rng=np.random.default_rng(9))
    b = nn.Dropout(0.5, rng=np.random.default_rng(9))
    x = np.ones((5, 7))
    np.testing.assert_array_equal(a(x), b(x))
    assert not np.array_equal(a(x), a(x))  # a fresh mask each call


def test_words_are_a_pure_function_of_key_sample_and_element():
    idx = np.array([3, 10**9, 2**32 - 1], dtype=np.uint64)
    words = randomness.random_words(123, idx, 5)
    for r, i in enumerate(idx):
        np.testing.assert_array_equal(words[r], randomness.random_words(123, np.array([i]), 5)[0])
    np.testing.assert_array_equal(words[:, :3], randomness.random_words(123, idx, 3))
    assert len(np.unique(words)) == words.size
