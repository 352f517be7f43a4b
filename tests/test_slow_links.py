"""Slow links for the compose cluster: launch/docker-compose.slow.yml and the entrypoint's tc.

The real shaping (and the throughput it gives) is measured by launch/slownet-bench.sh with
launch/linkcheck.py; these check what can be checked without Docker: only the override grants
NET_ADMIN and it weakens nothing else, bad settings are one-line errors before anything is
done, the tc commands are the documented ones, and a delay the kernel cannot add is an error.
"""
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
ENTRYPOINT = LAUNCH / "entrypoint.sh"
SLOW = LAUNCH / "docker-compose.slow.yml"


def test_only_the_override_grants_net_admin_and_it_weakens_nothing():
    base = (ROOT / "docker-compose.yml").read_text()
    slow = SLOW.read_text()
    assert "NET_ADMIN" not in base
    code = "\n".join(line.split("#")[0] for line in slow.splitlines())
    assert re.search(r"^\s*cap_add:\s*\[NET_ADMIN\]\s*$", code, re.M)
    for weaker in ("privileged", "cap_drop", "security_opt", "network_mode", "pid:", "userns_mode"):
        assert weaker not in code, weaker
    assert re.search(r"^  coordinator:\s*\n\s*<<: \*slow", code, re.M)
    assert re.search(r"^  worker:\s*\n\s*<<: \*slow", code, re.M)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_merged_config_keeps_the_hardening_and_adds_net_admin():
    r = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "-f", str(SLOW), "config"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": "/usr/bin:/bin", "DISTNET_LINK_RATE": "100mbit"})
    assert r.returncode == 0, r.stderr
    for service in ("coordinator", "worker"):
        block = re.search(rf"^  {service}:\n((?:    .*\n)+)", r.stdout, re.M).group(1)
        assert re.search(r"cap_add:\n(?:    - \w+\n)*    - NET_ADMIN\n", block), block
        assert re.search(r"cap_drop:\n    - ALL\n", block), block
        assert "no-new-privileges:true" in block
        assert "DISTNET_LINK_RATE: 100mbit" in block


def run_entrypoint(tmp_path, role, uid="1000", tc_exit=1, **env):
    """The entry point with fake ``id``, ``ip`` and ``tc``: ``tc`` records its arguments and
    fails, so a root run stops right after limit_links and nothing is done to this machine."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir(exist_ok=True)
    for name, body in (("id", f"echo {uid}"), ("ip", "echo 'default via 10.0.0.1 dev eth7 proto static'"),
                       ("tc", f"echo \"$*\" >> {tmp_path}/tc.log; echo 'Error: Specified qdisc kind is unknown.' >&2; "
                              f"exit {tc_exit}")):
        (fakebin / name).write_text(f"#!/bin/sh\n{body}\n")
        (fakebin / name).chmod(0o755)
    full_env = {"PATH": f"{fakebin}:/usr/bin:/bin", "DISTNET_RENDEZVOUS": str(tmp_path / "rdv"), **env}
    r = subprocess.run(["bash", str(ENTRYPOINT), role], env=full_env, capture_output=True, text=True, timeout=30)
    log = tmp_path / "tc.log"
    return r, log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("role", ["worker", "coordinator"])
@pytest.mark.parametrize("var, value", [
    ("DISTNET_LINK_RATE", "fast"), ("DISTNET_LINK_RATE", "100"), ("DISTNET_LINK_RATE", "100mbps"),
    ("DISTNET_LINK_RATE", "1gbit; id"), ("DISTNET_LINK_DELAY", "0.5"), ("DISTNET_LINK_DELAY", "-1ms"),
    ("DISTNET_LINK_DELAY", "1s"),
])
def test_a_bad_link_setting_is_a_one_line_error_before_anything(tmp_path, role, var, value):
    r, tc = run_entrypoint(tmp_path, role, uid="0", **{var: value})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"distnet: error: {var}: "), r.stderr
    assert tc == [] and not (tmp_path / "rdv").exists()


@pytest.mark.parametrize("role", ["worker", "coordinator"])
@pytest.mark.parametrize("env, command", [
    ({"DISTNET_LINK_RATE": "100mbit"}, "qdisc replace dev eth7 root tbf rate 100mbit burst 65536 latency 50ms"),
    ({"DISTNET_LINK_RATE": "1gbit"}, "qdisc replace dev eth7 root tbf rate 1gbit burst 125000 latency 50ms"),
    ({"DISTNET_LINK_RATE": "2.5gbit"}, "qdisc replace dev eth7 root tbf rate 2.5gbit burst 312500 latency 50ms"),
    ({"DISTNET_LINK_DELAY": "0.5ms"}, "qdisc replace dev eth7 root netem delay 0.5ms limit 10000"),
    ({"DISTNET_LINK_RATE": "100mbit", "DISTNET_LINK_DELAY": "0.5ms"},
     "qdisc replace dev eth7 root netem delay 0.5ms rate 100mbit limit 10000"),
])
def test_the_shaper_is_applied_before_anything_else_and_a_failure_stops_the_node(tmp_path, role, env, command):
    r, tc = run_entrypoint(tmp_path, role, uid="0", **env)
    assert tc == [command]
    assert r.returncode == 1 and "tc " in r.stderr and "failed" in r.stderr, r.stderr
    if "DISTNET_LINK_DELAY" in env:  # the reason a delay fails on a kernel without sch_netem
        assert "no sch_netem" in r.stderr
    assert not (tmp_path / "rdv").exists()  # nothing else was done


@pytest.mark.parametrize("role", ["worker", "coordinator"])
def test_no_link_setting_no_tc(tmp_path, role):
    r, tc = run_entrypoint(tmp_path, role)
    assert tc == [] and r.returncode == 1 and "must start as root" in r.stderr


def test_linkcheck_measures_a_loopback_link():
    sys.path.insert(0, str(LAUNCH))
    try:
        import linkcheck
    finally:
        sys.path.remove(str(LAUNCH))
    import socket
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    threading.Thread(target=linkcheck.serve, args=(port,), daemon=True).start()
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            threading.Event().wait(0.05)
    line = linkcheck.measure("127.0.0.1", port, seconds=0.3, pings=20)
    m = re.fullmatch(r"link 127\.0\.0\.1: ([0-9.]+) Mbit/s \(127\.0\.0\.1 <- here, [0-9.]+ s\), rtt median ([0-9.]+) ms "
                     r"\(p10 [0-9.]+, p90 [0-9.]+, 20 pings\)", line)
    assert m and float(m[1]) > 10 and float(m[2]) < 100, line
