"""End-to-end tests of ``python -m distnet.plot``."""
import json

import pytest
from PIL import Image

from conftest import run_train
from test_cli_evaluate import assert_user_error, blocker, run_cli

from distnet.cli import plot


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("plotruns")
    for name, lr in (("slow", "0.002"), ("fast", "0.01")):
        r = run_train("--dataset", "synthetic", "--model", "lenet5", "--batch-size", "64", "--epochs", "3",
                      "--optimizer", "momentum", "--lr", lr, "--eval-every", "8", "--log-every", "4",
                      "--no-progress", "--run-dir", base / name)
        assert r.returncode == 0, r.stderr
    return base / "slow", base / "fast"


def test_plot_two_runs_writes_a_png(two_runs, tmp_path):
    out = tmp_path / "curves.png"
    r = run_cli("distnet.plot", *two_runs, "-o", out)
    assert r.returncode == 0, r.stderr
    assert f"wrote {out} (2 runs)" in r.stdout
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (1600, 900)
    # a metrics file works as well as its folder
    r = run_cli("distnet.plot", two_runs[0] / "metrics.jsonl", "-o", tmp_path / "one.png")
    assert r.returncode == 0, r.stderr


def test_figure_has_labelled_axes_legends_and_both_curves(two_runs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [plot.read_run(str(p)) for p in two_runs]
    fig = plot.figure(runs, plt)
    loss_step, acc_step, speed, loss_epoch, acc_epoch, table = fig.axes[:6]
    for ax in (loss_step, acc_step, speed, loss_epoch, acc_epoch):
        assert ax.get_xlabel() in ("step", "epoch") and ax.get_ylabel() and ax.get_title()
        assert ax.get_legend() is not None
    for ax in (loss_step, acc_step, loss_epoch, acc_epoch):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["slow train", "slow test", "fast train", "fast test"]
        assert all(len(line.get_xdata()) > 1 for line in ax.get_lines())
    assert [t.get_text() for t in speed.get_legend().get_texts()] == ["slow", "fast"]
    # test accuracy vs step is the eval events, exactly
    evals = [json.loads(line) for line in (two_runs[1] / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    fast_test = acc_step.get_lines()[3]
    assert list(fast_test.get_xdata()) == [e["step"] for e in evals]
    assert list(fast_test.get_ydata()) == pytest.approx([e["accuracy"] * 100 for e in evals])
    plt.close(fig)


def test_per_epoch_means_and_last_values(tmp_path):
    metrics = tmp_path / "m.jsonl"
    records = [{"event": "train", "step": 1, "epoch": 1, "loss": 2.0, "accuracy": 0.1, "images_per_sec": 5},
               {"event": "train", "step": 2, "epoch": 1, "loss": 1.0, "accuracy": 0.3, "images_per_sec": 5},
               {"event": "eval", "step": 2, "epoch": 1, "loss": 0.9, "accuracy": 0.5},
               {"event": "train", "step": 3, "epoch": 2, "loss": 0.5, "accuracy": 0.6, "images_per_sec": 5},
               {"event": "eval", "step": 3, "epoch": 2, "loss": 0.4, "accuracy": 0.7},
               {"event": "eval", "step": 4, "epoch": 2, "loss": 0.3, "accuracy": 0.8}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"event": "tra')  # cut short
    run = plot.read_run(str(metrics))
    assert run.label == "m"
    assert plot.per_epoch(run.train, "loss", "mean") == ([1, 2], [1.5, 0.5])
    assert plot.per_epoch(run.test, "accuracy", "last") == ([1, 2], [0.5, 0.8])


def test_bad_input(two_runs, tmp_path):
    out = tmp_path / "x.png"
    assert_user_error(run_cli("distnet.plot", tmp_path / "none", "-o", out), tmp_path / "none", "not found")
    assert_user_error(run_cli("distnet.plot", tmp_path, "-o", out), tmp_path, "no metrics.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"event": "train", "step": 1}\nnot json\n{"event": "eval", "step": 2}\n')
    assert_user_error(run_cli("distnet.plot", bad, "-o", out), f"{bad}:2", "not a JSON line")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert_user_error(run_cli("distnet.plot", empty, "-o", out), empty, "no train or eval records")
    assert_user_error(run_cli("distnet.plot", *two_runs, "--label", "a", "-o", out), "--label")
    assert not out.exists()


def test_without_matplotlib_one_clear_line(two_runs, tmp_path):
    out = tmp_path / "curves.png"
    r = run_cli("distnet.plot", *two_runs, "-o", out, env=blocker(tmp_path, "matplotlib"))
    assert_user_error(r, "matplotlib", "pip install 'distnet[plot]'")
    assert not out.exists()
