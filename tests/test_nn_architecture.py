"""A hand-built network's architecture as data (nn.architecture), and its checkpoint
evaluated and predicted from the file alone."""
import json

import numpy as np
import pytest

import distnet
from distnet import nn, optim
from distnet.data import ArrayDataset
from distnet.meta import load_trained
from distnet.nn.architecture import build, describe, sizes


def every_layer(rng):
    """One of each layer distnet describes, in a network that runs on 3x8x8 input."""
    block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, rng=rng), nn.BatchNorm2d(8, momentum=0.2), nn.ReLU())
    return nn.Sequential(
        nn.PatchWhitening(3, patch=2, eps=1e-3),                     # 3 -> 24 channels, 7x7
        nn.Conv2d(24, 8, (3, 2), stride=1, padding=1, bias=False, rng=rng),  # 7x8
        nn.Residual(block),
        nn.Residual(nn.Sequential(nn.Conv2d(8, 4, 1, rng=rng)), shortcut=nn.Conv2d(8, 4, 1, bias=False, rng=rng)),
        nn.MaxPool2d(2), nn.Tanh(), nn.AvgPool2d(3, stride=1),       # 3x4 -> 1x2
        nn.Flatten(), nn.Linear(8, 6, rng=rng), nn.BatchNorm1d(6, eps=1e-4), nn.Sigmoid(),
        nn.Dropout(0.25), nn.Linear(6, 3, bias=False, rng=rng), nn.Scale(0.5))


def test_every_layer_survives_the_round_trip_through_json():
    rng = np.random.default_rng(0)
    model = every_layer(rng)
    model.layers[0].init_from_data(rng.standard_normal((64, 3, 8, 8)).astype(np.float32))
    model.flat_buffers[...] += rng.uniform(0.5, 1.0, model.flat_buffers.size).astype(np.float32)  # not the defaults
    description = json.loads(json.dumps(describe(model)))
    assert description["layer"] == "Sequential" and len(description["layers"]) == len(model.layers)
    assert description["layers"][1] == {"layer": "Conv2d", "args": {
        "in_channels": 24, "out_channels": 8, "kernel_size": [3, 2], "stride": 1, "padding": 1, "bias": False}}
    rebuilt = build(description)
    assert describe(rebuilt) == description
    assert sizes(description) == (model.flat_params.size, model.flat_buffers.size)
    assert rebuilt.flat_params.size == model.flat_params.size
    rebuilt.flat_params[...] = model.flat_params
    rebuilt.flat_buffers[...] = model.flat_buffers
    model.eval(), rebuilt.eval()
    x = rng.standard_normal((5, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt(x), model(x))


@pytest.mark.parametrize("name", ["lenet5", "cnn2", "cifar-cnn", "cifar-resnet", "cifar-fast"])
def test_the_named_models_are_described_and_counted_exactly(name):
    shape = (1, 28, 28) if name in ("lenet5", "cnn2") else (3, 32, 32)
    model = nn.build_model(name, shape, 10, seed=0)
    description = describe(model)
    assert sizes(description) == (model.flat_params.size, model.flat_buffers.size)
    assert repr(build(description)) == repr(model)


class Doubling(nn.Module):
    def forward(self, x):
        return 2 * x

    def backward(self, grad_out):
        return 2 * grad_out


class LeakyReLU(nn.ReLU):
    pass


def test_a_layer_of_the_users_own_cannot_be_described():
    assert describe(nn.Sequential(nn.Linear(2, 2), Doubling())) is None
    assert describe(nn.Sequential(nn.Linear(2, 2), LeakyReLU())) is None  # a subclass may differ
    assert describe(nn.Sequential(nn.Residual(nn.Sequential(Doubling())))) is None


@pytest.mark.parametrize("description, needle", [
    ({"layer": "Popen", "args": {"args": "rm"}}, "unknown layer 'Popen'"),
    ({"layer": "Sequential", "layers": [{"layer": "Linear", "args": {"in_features": "2", "out_features": 2}}]},
     "not plain numbers"),
    ({"layer": "Linear", "args": {"in_features": 2, "out_features": 2, "init": "he", "rng": 1}}, "not plain numbers"),
    ({"layer": "Linear", "args": {"in_features": 2}}, "Linear"),
    ({"layer": "Conv2d", "args": {"in_channels": 2, "out_channels": 2, "kernel_size": [3, 3, 3]}}, "pair"),
    ([1, 2], "is not a layer"),
    ({"layer": "Sequential"}, "list of layers"),
])
def test_anything_else_is_refused_in_one_line(description, needle):
    with pytest.raises(ValueError, match="architecture") as caught:
        build(description)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_deep_nest_is_refused():
    deep = {"layer": "ReLU", "args": {}}
    for _ in range(100):
        deep = {"layer": "Sequential", "layers": [deep]}
    with pytest.raises(ValueError, match="nested too deeply"):
        build(deep)


def hand_built(rng):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 3, rng=rng))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A hand-built conv net fitted on three blobs of 8x8 images, with its checkpoint."""
    rng = np.random.default_rng(1)
    labels = np.arange(120) % 3
    x = rng.standard_normal((120, 1, 8, 8)).astype(np.float32) + labels[:, None, None, None]
    model = hand_built(np.random.default_rng(2))
    folder = tmp_path_factory.mktemp("handbuilt")
    distnet.fit(model, ArrayDataset(x, labels, classes=["a", "b", "c"]), loss="cross-entropy",
                optimizer=optim.Adam(model, lr=0.01), epochs=4, batch_size=20, checkpoint_dir=folder,
                verbose=False)
    return model, x, folder / "latest.npz"


def test_a_hand_built_network_is_rebuilt_from_its_checkpoint(trained):
    model, x, checkpoint = trained
    rebuilt, meta = load_trained(checkpoint)
    assert meta["model"]["spec"] == "Sequential" and meta["model"]["architecture"] == describe(model)
    model.eval()
    np.testing.assert_array_equal(rebuilt(x), model(x))
    assert np.mean(np.argmax(model(x), 1) == np.arange(120) % 3) > 0.9  # it did learn


def test_a_description_larger_than_the_weights_is_refused_before_it_is_built(trained, tmp_path):
    from distnet import checkpoint as ckpt_io
    _, _, checkpoint = trained
    ck = ckpt_io.load(checkpoint)
    ck.meta["model"]["architecture"]["layers"][-1]["args"]["in_features"] = 10 ** 12  # ~4 TB if built
    doctored = tmp_path / "doctored.npz"
    ckpt_io.save(ck, doctored)
    with pytest.raises(ValueError, match="the file holds"):
        load_trained(doctored)


def test_a_checkpoint_of_a_model_with_a_layer_of_the_users_own_says_why_it_cannot_be_rebuilt(tmp_path):
    model = nn.Sequential(nn.Linear(4, 8, rng=np.random.default_rng(0)), Doubling(), nn.Linear(8, 3))
    x = np.random.default_rng(1).standard_normal((30, 4)).astype(np.float32)
    distnet.fit(model, ArrayDataset(x, np.arange(30) % 3), loss="cross-entropy", optimizer=optim.SGD(model, lr=0.1),
                batch_size=10, checkpoint_dir=tmp_path, verbose=False)
    with pytest.raises(ValueError, match="built in Python and the file does not describe it"):
        load_trained(tmp_path / "latest.npz")
