"""End-to-end tests of ``python -m distnet.predict``: real MNIST images as files, the conversion
of scans and other sizes, arrays, and every kind of bad file."""
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import run_train
from test_cli_evaluate import assert_user_error, run_cli

from distnet.cli.inputs import read_samples
from distnet.data import load_dataset, write_idx
from distnet.meta import load_trained


@pytest.fixture(scope="module")
def mnist_model(tmp_path_factory):
    """LeNet-5 after 80 steps on the real MNIST (about 94% test accuracy)."""
    ck = tmp_path_factory.mktemp("mnistmodel")
    r = run_train("--model", "lenet5", "--max-steps", "80", "--eval-every", "0", "--no-progress",
                  "--schedule", "cosine", "--warmup-steps", "100", "--lr", "2e-3",  # the default's one-cycle
                  "--checkpoint-dir", ck)  # is still warming up at step 80
    assert r.returncode == 0, r.stderr
    return ck / "latest.npz"


@pytest.fixture(scope="module")
def mnist_test():
    return load_dataset("mnist", "test")


def predict_json(*args):
    r = run_cli("distnet.predict", *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def model_classes(checkpoint, images):
    """What the model says about uint8 (N, 1, 28, 28) images, computed here directly."""
    model, meta = load_trained(checkpoint)
    x = (images.astype(np.float32) / 255 - meta["mean"][0]) / meta["std"][0]
    return model(x).argmax(axis=1)


def test_mnist_test_images_as_png_score_like_evaluate(mnist_model, mnist_test, tmp_path):
    """200 MNIST test images saved as PNG: predict gives the model's own answer for each one,
    and its accuracy equals evaluate's on the same 200 images (written as an IDX test split)."""
    n = 200
    images, labels = mnist_test.images[:n], mnist_test.labels[:n]
    files = []
    for i in range(n):
        path = tmp_path / "png" / f"{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(images[i, 0]).save(path)
        files.append(path)
    got = predict_json(mnist_model, *files)
    assert [g["file"] for g in got] == [str(f) for f in files]
    predicted = np.array([int(g["class"]) for g in got])
    np.testing.assert_array_equal(predicted, model_classes(mnist_model, images))
    idx = tmp_path / "idx"
    idx.mkdir()
    write_idx(idx / "t10k-images-idx3-ubyte", images[:, 0])
    write_idx(idx / "t10k-labels-idx1-ubyte", labels.astype(np.uint8))
    r = run_cli("distnet.evaluate", mnist_model, "--dataset", "mnist", "--data-dir", idx, "--json")
    assert r.returncode == 0, r.stderr
    evaluated = json.loads(r.stdout)
    assert evaluated["samples"] == n
    assert np.mean(predicted == labels) == pytest.approx(evaluated["accuracy"], abs=0)
    assert evaluated["accuracy"] > 0.85, "the fixture model should have learned something"
    assert all(g["conversion"] == "PNG 28x28 L, used as it is" for g in got)


def test_json_shape_and_top_k(mnist_model, mnist_test, tmp_path):
    path = tmp_path / "seven.png"
    Image.fromarray(mnist_test.images[0, 0]).save(path)
    (one,) = predict_json(mnist_model, path, "--top-k", "10")
    assert set(one) == {"file", "class", "probability", "top", "conversion"}
    probs = [t["probability"] for t in one["top"]]
    assert len(probs) == 10 and probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-6)
    assert one["class"] == one["top"][0]["class"] and one["probability"] == probs[0]
    assert sorted(t["class"] for t in one["top"]) == [str(d) for d in range(10)]
    (three,) = predict_json(mnist_model, path)
    assert len(three["top"]) == 3
    r = run_cli("distnet.predict", mnist_model, path, "--top-k", "2")
    assert r.returncode == 0
    assert r.stdout.startswith(f"{path}: {one['class']} (") and "; then " in r.stdout
    assert "used as it is" in r.stdout


def test_a_scan_is_inverted_exactly(mnist_model, mnist_test, tmp_path):
    """Dark digit on light paper: inverting it gives back the MNIST pixels, so the same answer."""
    original, scan = tmp_path / "orig.png", tmp_path / "scan.jpg.png"
    Image.fromarray(mnist_test.images[3, 0]).save(original)
    Image.fromarray(255 - mnist_test.images[3, 0]).save(scan)
    a, b = predict_json(mnist_model, original, scan, "--top-k", "10")
    assert "inverted (dark on light)" in b["conversion"] and "inverted" not in a["conversion"]
    assert a["top"] == b["top"]


def test_larger_image_is_fitted_like_mnist(tmp_path):
    """A 120x90 RGB photo of a dark bar on white: grayscale, inverted, ink box scaled to fit
    20x20 and centred by mass in 28x28."""
    canvas = np.full((90, 120, 3), 240, np.uint8)
    canvas[20:70, 50:60] = (10, 20, 30)  # a 10 wide, 50 tall dark bar
    path = tmp_path / "bar.jpg"
    Image.fromarray(canvas).save(path, quality=95)
    (sample,) = read_samples(path, [1, 28, 28], dark_background=True)
    px = sample.pixels[0].astype(float)
    assert sample.pixels.shape == (1, 28, 28)
    assert "JPEG 120x90 RGB" in sample.conversion and "to grayscale" in sample.conversion
    assert "inverted" in sample.conversion and "fitted into 20x20" in sample.conversion
    ink = px > 128
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    assert rows[-1] - rows[0] + 1 == 20 and 3 <= cols[-1] - cols[0] + 1 <= 5
    cy = (px.sum(axis=1) @ np.arange(28)) / px.sum()
    cx = (px.sum(axis=0) @ np.arange(28)) / px.sum()
    assert abs(cy - 13.5) < 1 and abs(cx - 13.5) < 1
    assert px[0].max() < 30 and px[:, 0].max() < 30, "the paper became the dark background"


def test_transparency_is_flattened_onto_white(tmp_path):
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[8:20, 12:16] = (0, 0, 0, 255)  # opaque black stroke on fully transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    (sample,) = read_samples(path, [1, 28, 28], dark_background=True)
    assert "transparency flattened onto white" in sample.conversion and "inverted" in sample.conversion
    assert sample.pixels[0, 10, 13] == 255 and sample.pixels[0, 0, 0] == 0


def test_color_model_gets_rgb_resized(tmp_path):
    path = tmp_path / "c.png"
    Image.fromarray(np.full((64, 48), 200, np.uint8)).save(path)
    (sample,) = read_samples(path, [3, 32, 32], dark_background=False)
    assert sample.pixels.shape == (3, 32, 32) and "to RGB" in sample.conversion and "resized to 32x32" in sample.conversion
    assert np.all(sample.pixels == 200)


def test_npy_and_idx_arrays(mnist_model, mnist_test, tmp_path):
    images = np.ascontiguousarray(mnist_test.images[:5])
    expected = model_classes(mnist_model, images).tolist()
    np.save(tmp_path / "one.npy", images[0, 0])                      # (28, 28) uint8
    np.save(tmp_path / "batch.npy", images)                          # (5, 1, 28, 28) uint8
    np.save(tmp_path / "float.npy", images[:3, 0] / np.float32(255))  # (3, 28, 28) floats in [0, 1]
    write_idx(tmp_path / "five-idx3-ubyte", images[:, 0])
    got = predict_json(mnist_model, tmp_path / "one.npy", tmp_path / "batch.npy", tmp_path / "float.npy",
                       tmp_path / "five-idx3-ubyte")
    assert [int(g["class"]) for g in got] == expected[:1] + expected + expected[:3] + expected
    assert "index" not in got[0] and [g["index"] for g in got[1:6]] == [0, 1, 2, 3, 4]
    assert got[-1]["file"] == str(tmp_path / "five-idx3-ubyte") and "IDX array" in got[-1]["conversion"]


def png_header_only(width, height):
    """A valid PNG whose header claims width x height, with (almost) no pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_bad_files_are_one_line_naming_the_file(mnist_model, mnist_test, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(mnist_test.images[0, 0]).save(good)
    data = good.read_bytes()
    cases = {
        "garbled.png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "cannot read PNG"),
        "truncated.png": (data[: len(data) // 2], "truncated or corrupt"),
        "truncated.jpg": (None, "JPEG"),
        "notes.png": (b"just some text, not an image\n", "not an image"),
        "empty.png": (b"", "empty file"),
        "big.png": (png_header_only(10_000, 10_000), "10000x10000"),  # refused by distnet
        "bomb.png": (png_header_only(100_000, 100_000), "decompression bomb"),  # by Pillow itself
        "labels-idx1-ubyte": (None, "does not fit"),
    }
    buf = tmp_path / "j.jpg"
    Image.fromarray(mnist_test.images[1, 0]).save(buf, quality=90)
    jpeg = buf.read_bytes()
    for name, (content, needle) in cases.items():
        path = tmp_path / name
        if name == "truncated.jpg":
            path.write_bytes(jpeg[:40])
        elif name == "labels-idx1-ubyte":
            write_idx(path, np.arange(10, dtype=np.uint8))
        else:
            path.write_bytes(content)
        # the bad file among good ones: still one error line and no half output
        r = run_cli("distnet.predict", mnist_model, good, path, "--json")
        assert_user_error(r, path, needle)
    assert_user_error(run_cli("distnet.predict", mnist_model, tmp_path / "missing.png"),
                      tmp_path / "missing.png", "not found")


def test_npy_that_needs_pickle_or_has_wrong_shape(mnist_model, tmp_path):
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_user_error(run_cli("distnet.predict", mnist_model, objects), objects, "not a plain .npy")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((32, 32, 3), np.uint8))
    assert_user_error(run_cli("distnet.predict", mnist_model, wrong), wrong, "32x32x3", "1x28x28")
    out_of_range = tmp_path / "range.npy"
    np.save(out_of_range, np.full((28, 28), 3.0))
    assert_user_error(run_cli("distnet.predict", mnist_model, out_of_range), out_of_range, "[0, 1]")


def test_missing_checkpoint_and_bad_flags(mnist_model, tmp_path):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    assert_user_error(run_cli("distnet.predict", tmp_path / "none.npz", img), tmp_path / "none.npz")
    assert_user_error(run_cli("distnet.predict", mnist_model, img, "--top-k", "0"), "--top-k")
    assert_user_error(run_cli("distnet.predict", mnist_model), "FILE")
