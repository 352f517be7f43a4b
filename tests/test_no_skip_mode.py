"""DISTNET_REQUIRE_ALL_TESTS=1 (what .ci/run sets) turns every skip into a failure that
carries the skip's reason; without it a skip stays a skip. Checked on a real pytest run of a
small test file, with tests/conftest.py loaded as a plugin."""
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SAMPLE = '''
import pytest

@pytest.mark.skipif(True, reason="reason-from-mark")
def test_marked():
    pass

def test_skips_itself():
    pytest.skip("reason-from-call")

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False

def test_passes():
    pass
'''


def _run(tmp_path, require_all):
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "DISTNET_REQUIRE_ALL_TESTS"}
    env["PYTHONPATH"] = str(TESTS)
    if require_all:
        env["DISTNET_REQUIRE_ALL_TESTS"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q", "-rA",
           "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path / "test_sample.py")]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_skips_fail_with_their_reason_when_all_tests_are_required(tmp_path):
    r = _run(tmp_path, require_all=True)
    assert r.returncode == 1, r.stdout + r.stderr
    summary = r.stdout.strip().splitlines()[-1]
    assert "1 failed" in summary and "1 error" in summary and "1 passed" in summary, summary
    assert "skipped" not in summary and "1 xfailed" in summary, summary
    assert "allows no skip: Skipped: reason-from-mark" in r.stdout
    assert "allows no skip: Skipped: reason-from-call" in r.stdout


def test_skips_stay_skips_otherwise(tmp_path):
    r = _run(tmp_path, require_all=False)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = r.stdout.strip().splitlines()[-1]
    assert "1 passed" in summary and "2 skipped" in summary and "1 xfailed" in summary, summary
