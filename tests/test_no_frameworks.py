"""distnet must not import any deep-learning framework, directly or through a dependency."""
import ast
import subprocess
import sys

from conftest import REPO

FRAMEWORKS = ("torch", "tensorflow", "jax", "jaxlib", "chainer", "keras", "mxnet", "paddle", "cupy")


def test_source_imports_no_framework():
    for path in (REPO / "distnet").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FRAMEWORKS, f"{path}: imports {name}"


def test_importing_everything_loads_no_framework():
    code = ("import sys, pkgutil, importlib, distnet\n"
            "for m in pkgutil.walk_packages(distnet.__path__, 'distnet.'):\n"
            "    if m.name != 'distnet.distributed.mpi': importlib.import_module(m.name)\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS!r}]\n"
            "print(len([m for m in sys.modules if m.startswith('distnet')]), bad)\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.split()[0]) > 20  # really imported the package's modules
