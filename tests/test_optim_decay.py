"""Weight decay that leaves BatchNorm and bias parameters out (optim/decay.py and the
optimizers' weight_decay_mask), against steps computed by hand."""
import numpy as np
import pytest

from distnet.nn import BatchNorm1d, Linear, Sequential, build_model
from distnet.nn.module import Parameter
from distnet.nn.normalization import _BatchNorm
from distnet.optim import SGD, Adam, AdamW, RMSprop, decay_mask, make_optimizer
from distnet.optim.optimizers import OptimizerError


def tiny():
    """Linear(2, 2) (weight 4, bias 2) then BatchNorm1d(2) (weight 2, bias 2): 10 values."""
    return Sequential(Linear(2, 2, rng=np.random.default_rng(0)), BatchNorm1d(2))


@pytest.mark.parametrize("exclude,expected", [
    ("bn-bias", [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]),
    ("bn", [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]),
    ("bias", [1, 1, 1, 1, 0, 0, 1, 1, 0, 0]),
    (("bias",), [1, 1, 1, 1, 0, 0, 1, 1, 0, 0]),
    ("none", [1] * 10),
])
def test_mask_follows_the_flat_order(exclude, expected):
    model = tiny()
    np.testing.assert_array_equal(decay_mask(model, exclude), expected)


def test_mask_of_cifar_resnet_leaves_out_exactly_bn_and_the_head_bias():
    model = build_model("cifar-resnet", (3, 32, 32), 10)
    mask = decay_mask(model, "bn-bias")
    assert mask.shape == model.flat_params.shape
    bn = sum(p.size for m in model.modules() if isinstance(m, _BatchNorm) for p in m.own_parameters())
    assert bn > 0 and (mask == 0).sum() == bn + 10  # the Linear head's bias; convs have none
    # the zeros sit exactly on the BatchNorm views of the flat buffer
    marker = np.zeros_like(model.flat_params)
    saved = model.flat_params.copy()
    for m in model.modules():
        for p in m.own_parameters():
            if isinstance(m, _BatchNorm) or p.name == "bias":
                p.data[...] = 1
    marker[:] = model.flat_params == 1
    model.flat_params[...] = saved
    np.testing.assert_array_equal(mask == 0, marker == 1)


def set_state(model, p, g):
    model.flat_params[...] = p
    model.flat_grads[...] = g


def test_sgd_step_by_hand():
    """p = 2, g = 1, lr 0.1, wd 0.5: decayed 2 - 0.1 * (1 + 0.5 * 2) = 1.8, else 1.9."""
    model = tiny()
    set_state(model, 2.0, 1.0)
    SGD(model, lr=0.1, weight_decay=0.5, weight_decay_mask=decay_mask(model, "bn-bias")).step()
    np.testing.assert_allclose(model.flat_params, [1.8] * 4 + [1.9] * 6, rtol=1e-6)


def test_nesterov_two_steps_by_hand():
    """momentum 0.9, nesterov.  Decayed: step 1 d = 2, buf = 2, p = 2 - 0.1 * 3.8 = 1.62;
    step 2 d = 1 + 0.5 * 1.62 = 1.81, buf = 1.8 + 1.81 = 3.61, p = 1.62 - 0.1 * (1.81 + 3.249)
    = 1.1141.  Undecayed: 2 - 0.19 = 1.81, then buf 1.9, p = 1.81 - 0.271 = 1.539."""
    model = tiny()
    set_state(model, 2.0, 1.0)
    opt = make_optimizer("nesterov", model, lr=0.1, momentum=0.9, weight_decay=0.5, decay_exclude="bn")
    opt.step()
    np.testing.assert_allclose(model.flat_params, [1.62] * 6 + [1.81] * 4, rtol=1e-6)
    opt.step()
    np.testing.assert_allclose(model.flat_params, [1.1141] * 6 + [1.539] * 4, rtol=1e-6)


def test_adamw_decoupled_decay_by_hand():
    """g = 0: Adam's own update is 0, so only the decay moves p: 2 * (1 - 0.1 * 0.25) = 1.95."""
    model = tiny()
    set_state(model, 2.0, 0.0)
    AdamW(model, lr=0.1, weight_decay=0.25, weight_decay_mask=decay_mask(model, "bias")).step()
    np.testing.assert_allclose(model.flat_params, [1.95] * 4 + [2, 2, 1.95, 1.95, 2, 2], rtol=1e-6)


def test_adam_and_rmsprop_l2_decay_only_where_masked():
    """g = 0: the decayed elements see d = 0.5 * 2 = 1 and move; the others see d = 0 and stay.
    Adam's first step moves by lr * d / (|d| + eps) = 0.1; RMSprop (alpha 0.99) by
    lr * d / (sqrt(0.01 d^2) + eps) = 0.01 * 10 = 0.1 as well."""
    for cls in (Adam, RMSprop):
        model = tiny()
        set_state(model, 2.0, 0.0)
        kw = {"lr": 0.1} if cls is Adam else {"lr": 0.01}
        cls(model, weight_decay=0.5, weight_decay_mask=decay_mask(model, "bn-bias"), **kw).step()
        np.testing.assert_allclose(model.flat_params, [1.9] * 4 + [2.0] * 6, rtol=1e-5)


@pytest.mark.parametrize("cls,kw", [(SGD, dict(momentum=0.9, nesterov=True)), (RMSprop, {}), (Adam, {}), (AdamW, {})])
def test_all_ones_mask_is_plain_decay(cls, kw):
    rng = np.random.default_rng(2)
    models = [tiny(), tiny()]
    opts = [cls(models[0], lr=0.01, weight_decay=0.1, **kw),
            cls(models[1], lr=0.01, weight_decay=0.1, weight_decay_mask=np.ones(10), **kw)]
    for _ in range(3):
        g = rng.standard_normal(10).astype(np.float32)
        for m, o in zip(models, opts):
            m.flat_grads[...] = g
            o.step()
    np.testing.assert_allclose(models[0].flat_params, models[1].flat_params, rtol=1e-6, atol=1e-7)


def test_mask_is_sliced_per_segment_for_separate_parameters():
    """Parameters that do not share a buffer are separate segments; each gets its own part."""
    a = Parameter(np.full(3, 2.0, np.float32), "weight")
    b = Parameter(np.full(2, 2.0, np.float32), "bias")
    a.grad[...] = 1.0
    b.grad[...] = 1.0
    opt = SGD([a, b], lr=0.1, weight_decay=0.5, weight_decay_mask=[1, 0, 1, 0, 1])
    assert opt.num_segments == 2
    opt.step()
    np.testing.assert_allclose(a.data, [1.8, 1.9, 1.8], rtol=1e-6)
    np.testing.assert_allclose(b.data, [1.9, 1.8], rtol=1e-6)


def test_state_dict_round_trip_is_unchanged_by_a_mask():
    model = tiny()
    opt = make_optimizer("adam", model, lr=0.01, weight_decay=0.1, decay_exclude="bn-bias")
    model.flat_grads[...] = 1.0
    opt.step()
    state = opt.state_dict()
    assert set(state) == {"lr", "step", "exp_avg", "exp_avg_sq"}
    again = make_optimizer("adam", model, lr=0.01, weight_decay=0.1, decay_exclude="bn-bias")
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.state_dict()["exp_avg"], state["exp_avg"])


@pytest.mark.parametrize("make,needle", [
    (lambda m: SGD(m, lr=0.1, weight_decay=0.1, weight_decay_mask=np.ones(9)), "shape"),
    (lambda m: SGD(m, lr=0.1, weight_decay=0.1, weight_decay_mask=-np.ones(10)), ">= 0"),
    (lambda m: SGD(m, lr=0.1, weight_decay=0.1, weight_decay_mask=np.full(10, np.nan)), "finite"),
    (lambda m: make_optimizer("sgd", m, lr=0.1, decay_exclude="conv"), "conv"),
    (lambda m: make_optimizer("sgd", m.parameters(), lr=0.1, decay_exclude="bn"), "Module"),
])
def test_bad_masks_raise_optimizer_errors(make, needle):
    with pytest.raises(OptimizerError, match=needle):
        make(tiny())


# ---- freezing: BatchNorm without its scale ------------------------------------------------

from distnet.optim import frozen_mask  # noqa: E402


def test_frozen_mask_marks_the_batchnorm_scales():
    np.testing.assert_array_equal(frozen_mask(tiny()), [0, 0, 0, 0, 0, 0, 1, 1, 0, 0])
    model = build_model("cifar-resnet", (3, 32, 32), 10)
    bn_scales = sum(m.weight.size for m in model.modules() if isinstance(m, _BatchNorm))
    assert frozen_mask(model).sum() == bn_scales > 0


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"])
def test_frozen_elements_keep_their_value_and_the_others_step_as_before(name):
    """Frozen: bit for bit unchanged over three steps with gradients and weight decay.  The
    rest: exactly the steps of an optimizer whose gradient is 0 at the frozen elements."""
    rng = np.random.default_rng(4)
    frozen, reference = tiny(), tiny()
    a = make_optimizer(name, frozen, lr=0.05, weight_decay=0.1, freeze="bn-scale")
    b = make_optimizer(name, reference, lr=0.05, weight_decay=0.1)
    keep = frozen_mask(frozen) == 0
    start = frozen.flat_params.copy()
    for _ in range(3):
        g = rng.standard_normal(10).astype(np.float32)
        frozen.flat_grads[...] = g
        reference.flat_grads[...] = np.where(keep, g, 0)
        a.step()
        b.step()
        np.testing.assert_array_equal(frozen.flat_grads, g)  # the caller's buffer is not written
    np.testing.assert_array_equal(frozen.flat_params[~keep], start[~keep])
    np.testing.assert_array_equal(frozen.flat_params[keep], reference.flat_params[keep])
    assert not np.array_equal(frozen.flat_params[keep], start[keep])


def test_sgd_with_frozen_scale_by_hand():
    """p = 2, g = 1, lr 0.1, wd 0.5, BatchNorm scale frozen: it stays 2, the others go to 1.8."""
    model = tiny()
    set_state(model, 2.0, 1.0)
    make_optimizer("sgd", model, lr=0.1, weight_decay=0.5, freeze="bn-scale").step()
    np.testing.assert_allclose(model.flat_params, [1.8] * 6 + [2.0, 2.0] + [1.8] * 2, rtol=1e-6)


def test_bad_freeze_requests():
    with pytest.raises(OptimizerError, match="conv"):
        make_optimizer("sgd", tiny(), lr=0.1, freeze="conv")
    with pytest.raises(OptimizerError, match="shape"):
        SGD(tiny(), lr=0.1).freeze(np.ones(3))
