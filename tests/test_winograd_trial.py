"""benchmarks/winograd_trial.py times a Winograd F(2x2, 3x3) forward against distnet's; its
figures mean something only if that forward is a correct convolution, checked here against
a float64 sliding-window reference."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "winograd_trial.py"


def load():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("winograd_trial", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def reference_conv(x, weight, bias):
    """NCHW float64 conv, padding 1, stride 1, returned CHWN like winograd_forward."""
    n, c, h, w = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    y = np.zeros((weight.shape[0], h, w, n))
    for i in range(3):
        for j in range(3):
            y += np.einsum("oc,nchw->ohwn", weight[:, :, i, j], xp[:, :, i:i + h, j:j + w])
    return y + bias[:, None, None, None]


@pytest.mark.parametrize("rows", [1, 2])
def test_winograd_forward_is_the_convolution(rows):
    trial = load()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4, 8, 6)).astype(np.float32)
    weight = rng.standard_normal((7, 4, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(7).astype(np.float32)
    workspace = {}
    for _ in range(2):  # the second call reuses the workspace's buffers
        got = trial.winograd_forward(x, weight, bias, rows, workspace)
        np.testing.assert_allclose(got, reference_conv(x, weight, bias), rtol=1e-4, atol=1e-4)


def test_winograd_forward_rejects_maps_that_do_not_tile():
    trial = load()
    weight = np.zeros((2, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="7x8 map"):
        trial.winograd_forward(np.zeros((1, 1, 7, 8), np.float32), weight)
    with pytest.raises(ValueError, match="blocks of 3 rows"):
        trial.winograd_forward(np.zeros((1, 1, 8, 8), np.float32), weight, rows=3)


def test_main_prints_each_eligible_conv_of_the_model(capsys):
    trial = load()
    assert trial.main(["--models", "cifar-cnn-nodrop,lenet5", "--batch-size", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("cifar-cnn-nodrop")]
    assert [line.split()[2] for line in rows] == ["3->32", "32->32", "32->64", "64->64", "64->128"]
    assert all(float(line.split()[-1]) < 1e-5 for line in rows)  # relative error column
    assert "lenet5             (no 3x3, stride-1, padding-1 conv on an even map)" in out
