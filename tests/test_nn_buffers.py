"""Contract A: modules(), buffers in one flat array (views), state dicts with buffers."""
import numpy as np
import pytest

from distnet import nn


def small_model():
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64), nn.BatchNorm2d(3, dtype=np.float64), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1, dtype=np.float64),
                                  nn.BatchNorm2d(3, dtype=np.float64))),
        nn.Flatten(), nn.Linear(3 * 16, 4, dtype=np.float64), nn.BatchNorm1d(4, dtype=np.float64))


def test_modules_is_depth_first_preorder():
    model = small_model()
    names = [type(m).__name__ for m in model.modules()]
    assert names == ["Sequential", "Conv2d", "BatchNorm2d", "ReLU", "Residual", "Sequential", "Conv2d",
                     "BatchNorm2d", "Flatten", "Linear", "BatchNorm1d"]
    assert list(model.modules()) == list(model.modules())  # a fixed order


def test_flat_buffers_hold_every_buffer_as_views():
    model = small_model()
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert model.flat_buffers.dtype == model.flat_params.dtype
    assert model.flat_buffers.size == sum(2 * bn.num_features for bn in bns)
    expected = np.concatenate([np.r_[np.zeros(bn.num_features), np.ones(bn.num_features)] for bn in bns])
    np.testing.assert_array_equal(model.flat_buffers, expected)
    for bn in bns:
        assert np.shares_memory(bn.running_mean, model.flat_buffers)
        assert np.shares_memory(bn.running_var, model.flat_buffers)
    model.flat_buffers[:] = np.arange(model.flat_buffers.size)  # written through the flat array
    assert bns[0].running_mean.tolist() == [0, 1, 2] and bns[0].running_var.tolist() == [3, 4, 5]
    model(np.random.default_rng(0).standard_normal((4, 2, 4, 4)))  # a training step updates in place
    assert not np.array_equal(model.flat_buffers, np.arange(model.flat_buffers.size))
    np.testing.assert_array_equal(np.concatenate(model.buffers()), model.flat_buffers)


def test_nested_sequential_uses_slices_of_the_outer_arrays():
    model = small_model()
    inner = model[3].block
    assert np.shares_memory(inner.flat_params, model.flat_params)
    assert np.shares_memory(inner.flat_grads, model.flat_grads)
    assert np.shares_memory(inner.flat_buffers, model.flat_buffers)
    np.testing.assert_array_equal(inner.flat_params, np.concatenate([p.data.ravel() for p in inner.parameters()]))
    model.flat_grads[:] = 1.0
    inner.zero_grad()
    assert all(not p.grad.any() for p in inner.parameters())
    assert model[0].weight.grad.all()


def test_model_without_buffers_has_empty_flat_buffers_and_old_state_keys():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 1))
    assert model.flat_buffers.shape == (0,) and model.flat_buffers.dtype == np.float32
    assert list(model.state_dict()) == ["0.weight", "1.bias", "2.weight", "3.bias"]


def test_state_dict_round_trips_parameters_and_buffers():
    source, target = small_model(), small_model()
    source.flat_params[:] = np.random.default_rng(1).standard_normal(source.flat_params.size)
    source.flat_buffers[:] = np.random.default_rng(2).random(source.flat_buffers.size)
    state = source.state_dict()
    assert [k for k in state if k.startswith("buffer.")][:2] == ["buffer.0.running_mean", "buffer.1.running_var"]
    target.load_state_dict(state)
    np.testing.assert_array_equal(target.flat_params, source.flat_params)
    np.testing.assert_array_equal(target.flat_buffers, source.flat_buffers)
    state["buffer.0.running_mean"][:] = -7  # a copy, not a view
    assert source.flat_buffers[0] != -7


def test_load_state_dict_rejects_a_wrong_shape_without_writing():
    model = small_model()
    before = model.flat_buffers.copy()
    state = model.state_dict()
    state = {k: (np.zeros(5) if k == "buffer.1.running_var" else v + 1) for k, v in state.items()}
    with pytest.raises(ValueError, match="buffer.1.running_var"):
        model.load_state_dict(state)
    np.testing.assert_array_equal(model.flat_buffers, before)
    with pytest.raises(ValueError, match="parameters and buffers"):
        model.load_state_dict({"0.weight": np.zeros(1)})
