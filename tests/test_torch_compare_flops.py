"""benchmarks/torch_compare.py counts the FLOPs of a training step (its "fraction of peak"
figure) and benchmarks/conv_layers.py walks a model's conv layers; both are checked here
against hand counts, without PyTorch."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from distnet import nn

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "torch_compare.py"


def load():
    spec = importlib.util.spec_from_file_location("torch_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lenet5_step_flops_by_hand():
    # conv1 6@5x5 over 28x28 (padded), conv2 16@5x5 over 10x10 outputs, FC 400-120-84-10
    conv1 = 6 * 1 * 25 * 28 * 28
    rest = 16 * 6 * 25 * 10 * 10 + 400 * 120 + 120 * 84 + 84 * 10
    # forward and weight gradient everywhere, input gradient except for the first layer
    per_image = 2 * conv1 * 2 + 2 * rest * 3
    assert load().step_flops("lenet5", 64) == 64 * per_image == 144_890_880


def test_nodrop_variant_drops_only_the_dropout_layers():
    tc = load()
    full = nn.build_model("cifar-cnn", (3, 32, 32), 10)
    nodrop = tc.distnet_model("cifar-cnn-nodrop")
    assert [type(layer) for layer in nodrop.layers] == [
        type(layer) for layer in full.layers if not isinstance(layer, nn.Dropout)]
    assert any(isinstance(layer, nn.Dropout) for layer in full.layers)
    np.testing.assert_array_equal(nodrop.flat_params, full.flat_params)  # same seed, same weights
    # the dropout layers carry no FLOPs: both names count the same
    assert tc.step_flops("cifar-cnn-nodrop", 8) == tc.step_flops("cifar-cnn", 8)


def test_conv_layers_walks_each_conv_at_the_shape_the_model_gives_it():
    """benchmarks/conv_layers.py times every Conv2d of a model alone; its cases (layer
    index, input and output shapes, whether the input gradient is needed) by hand."""
    spec = importlib.util.spec_from_file_location("conv_layers", SCRIPT.parent / "conv_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cases = [(index, before, after, input_grad) for index, _, before, after, input_grad in module.conv_cases("cnn2")]
    assert cases == [(0, (1, 28, 28), (16, 24, 24), False), (3, (16, 12, 12), (32, 8, 8), True)]
    lenet = [(before, after) for _, _, before, after, _ in module.conv_cases("lenet5")]
    assert lenet == [((1, 28, 28), (6, 28, 28)), ((6, 14, 14), (16, 10, 10))]  # 'same' padding first
    assert [i for i, *_ in module.conv_cases("cifar-cnn-nodrop")] == [0, 2, 5, 7, 10]


def test_unknown_or_untranslatable_models_are_one_line_errors():
    tc = load()
    assert tc.model_names("lenet5,,cnn2-nodrop", "prog") == ["lenet5", "cnn2-nodrop"]
    with pytest.raises(SystemExit, match=r"^prog: unknown model 'nope'; choose from lenet5, cnn2"):
        tc.model_names("lenet5,nope", "prog")
    with pytest.raises(SystemExit, match=r"^prog: model 'cifar-resnet': no shape rule .* for BatchNorm2d$"):
        tc.model_names("cifar-resnet", "prog")
