"""``distnet predict`` on checkpoints of models trained on the user's own arrays
(ArrayDataset, ``--dataset npz:``), whose inputs are the arrays' values as given, not pixel/255."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

import distnet
from distnet import checkpoint as ckpt_io
from distnet import nn, optim
from distnet.data import ArrayDataset


def predict(*args):
    return subprocess.run([sys.executable, "-m", "distnet.predict", *map(str, args), "--json"],
                          capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(REPO), "PATH": ""})


def fitted(folder, x, labels, **normalisation):
    """A small hand-built conv net fitted on ``x`` (N, 1, 8, 8); returns it in eval mode."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=np.random.default_rng(2)), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3, rng=np.random.default_rng(3)))
    distnet.fit(model, ArrayDataset(x, labels, classes=["a", "b", "c"], **normalisation), loss="cross-entropy",
                optimizer=optim.Adam(model, lr=0.01), epochs=4, batch_size=20, checkpoint_dir=folder, verbose=False)
    model.eval()
    return model


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """Float inputs around 0, 1 and 2, no normalisation: not pixels."""
    labels = np.arange(120) % 3
    x = np.random.default_rng(1).standard_normal((120, 1, 8, 8)).astype(np.float32) + labels[:, None, None, None]
    folder = tmp_path_factory.mktemp("blobs")
    return fitted(folder, x, labels), x, folder / "latest.npz"


def test_arrays_are_fed_as_given(blobs, tmp_path):
    model, x, checkpoint = blobs
    meta = ckpt_io.load(checkpoint).meta
    assert meta["inputs"] == "as given" and meta["mean"] is None
    assert meta["input_range"] == [float(x.min()), float(x.max())]
    np.save(tmp_path / "some.npy", x[:30])
    r = predict(checkpoint, tmp_path / "some.npy")
    assert r.returncode == 0, r.stderr
    got = [entry["class"] for entry in json.loads(r.stdout)]
    assert got == ["abc"[i] for i in np.argmax(model(x[:30]), axis=1)]
    assert np.mean(np.array(got) == np.array(list("abc" * 10))) >= 0.8  # and mostly right


def test_an_image_is_refused_for_a_model_of_other_arrays(blobs, tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image
    _, _, checkpoint = blobs
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "black.png")
    r = predict(checkpoint, tmp_path / "black.png")
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"distnet: error: {tmp_path / 'black.png'}: the model was trained on arrays in "
        f"[{blobs[1].min():g}, {blobs[1].max():g}], not images; give it .npy arrays"]


def test_images_reach_a_uint8_trained_model_in_its_own_units(tmp_path):
    """uint8 images in an ArrayDataset, normalised in pixel units (mean 127.5): a PNG of a
    training image gets the model's answer for that image (pixel/255 would not: a mean of
    127.5 taken off values in [0, 1] makes every input about -2)."""
    pytest.importorskip("PIL")
    from PIL import Image
    rng = np.random.default_rng(4)
    labels = np.arange(90) % 3
    x = np.clip(rng.normal(60 + 70 * labels[:, None, None, None], 25, (90, 1, 8, 8)), 0, 255).astype(np.uint8)
    model = fitted(tmp_path, x, labels, mean=[127.5], std=[60.0])
    meta = ckpt_io.load(tmp_path / "latest.npz").meta
    assert meta["inputs"] == "as given" and meta["input_range"] == [float(x.min()), float(x.max())]
    files = []
    for i in range(12):
        Image.fromarray(x[i, 0]).save(tmp_path / f"{i}.png")
        files.append(tmp_path / f"{i}.png")
    r = predict(tmp_path / "latest.npz", *files)
    assert r.returncode == 0, r.stderr
    want = np.argmax(model((x[:12].astype(np.float32) - 127.5) / 60.0), axis=1)
    assert [entry["class"] for entry in json.loads(r.stdout)] == ["abc"[i] for i in want]
    assert len(set(want)) == 3  # not one class for everything
