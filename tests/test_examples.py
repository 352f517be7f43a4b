"""The course programs in examples/: each runs alone and under ``mpirun -n 2`` with the same
result (shortened where a full run takes minutes)."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, mpirun

NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]\d+)?")


def run_example(name, *args, ranks=1, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1", DISTNET_OFFLINE="1")
    cmd = [sys.executable, str(REPO / "examples" / name), *map(str, args)]
    if ranks > 1:
        cmd = [mpirun(), "-n", str(ranks)] + cmd
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def alone_and_mpi(name, *args, cwd=None, rel=1e-4):
    """Output of one process; asserts two ranks print the same lines and numbers (to ``rel``:
    a sum over two ranks rounds differently from a sum on one)."""
    one, two = run_example(name, *args, cwd=cwd), run_example(name, *args, ranks=2, cwd=cwd)
    # fit's opening line names the number of ranks, progress lines the speed; the rest must match
    a, b = ([line for line in out.strip().splitlines() if " rank(s), " not in line and "img/s" not in line]
            for out in (one, two))
    assert [NUMBER.sub("#", line) for line in a] == [NUMBER.sub("#", line) for line in b], (one, two)
    x = np.array([float(v) for v in NUMBER.findall("\n".join(a))])
    y = np.array([float(v) for v in NUMBER.findall("\n".join(b))])
    np.testing.assert_allclose(x, y, rtol=rel, atol=1e-12)
    return one


def figure(text, label):
    return [float(v) for v in NUMBER.findall(next(line for line in text.splitlines() if line.startswith(label)))]


def test_worked_example_222():
    out = alone_and_mpi("worked_example_222.py", rel=0)
    assert figure(out, "E_total ")[0] == pytest.approx(0.298371109, abs=1e-9)
    assert round(figure(out, "E_total ")[0], 4) == 0.2984
    np.testing.assert_allclose(figure(out, "dE/dw5..w8"), [0.082167041, 0.082667628, -0.022602540, -0.022740242],
                               atol=1e-9)
    np.testing.assert_allclose(figure(out, "w5..w8 after"), [0.35891648, 0.408666186, 0.511301270, 0.561370121],
                               atol=1e-9)
    np.testing.assert_allclose(figure(out, "w1..w4 after"), [0.149780716, 0.19956143, 0.24975114, 0.29950229],
                               atol=1e-8)


def test_function_fitting_reaches_its_aim(tmp_path):
    out = alone_and_mpi("function_fitting.py", cwd=tmp_path, rel=1e-3)
    rmse = figure(out, "test RMSE")[0]
    assert rmse <= 0.05, out


def test_numpy_fc_regression():
    out = alone_and_mpi("numpy_fc_regression.py", rel=1e-3)
    losses = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("iteration")]
    assert out.splitlines()[0].startswith("iteration   0") and out.splitlines()[-1].startswith("iteration 499")
    assert 1e7 < losses[0] < 1e8 and losses[-1] < 1e-4
    assert all(b < a for a, b in zip(losses, losses[1:]))


def test_cifar10_mlp_shortened(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cifar_like.npz"
    np.savez(path, x_train=rng.integers(0, 256, (64, 3, 32, 32)).astype(np.uint8), y_train=rng.integers(0, 10, 64),
             x_test=rng.integers(0, 256, (40, 3, 32, 32)).astype(np.uint8), y_test=rng.integers(0, 10, 40))
    out = alone_and_mpi("cifar10_mlp.py", "--npz", path, "--max-steps", "3")
    assert "test accuracy" in out.splitlines()[-1] and "after 3 steps" in out


@pytest.mark.parametrize("name", ["lenet5_mnist.py", "cnn_sigmoid_mnist.py"])
def test_mnist_examples_shortened(name):
    out = alone_and_mpi(name, "--max-steps", "8", "--limit", "512")
    assert out.splitlines()[-1].startswith("test accuracy") and "after 8 steps" in out


def test_the_readme_program_runs_as_printed(tmp_path):
    """The library section's opening program, pasted as it stands, alone and under mpirun."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## The library"):]
    program = section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python"))]
    script = tmp_path / "fit_function.py"
    script.write_text(program)
    env = dict(os.environ, PYTHONPATH=str(REPO), OPENBLAS_NUM_THREADS="1")
    outs = []
    for cmd in ([sys.executable, str(script)], [mpirun(), "-n", "2", sys.executable, str(script)]):
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    mse = [float(out.split("test MSE")[1].split()[0]) for out in outs]
    assert mse[0] < 1e-3 and mse[1] == pytest.approx(mse[0], rel=1e-4)
