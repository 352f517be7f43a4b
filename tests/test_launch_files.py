"""The multi-node launch files (launch/, docker-compose.yml, .dockerignore), checked without
Docker: structure of the compose file and the Dockerfile, no key material anywhere, and the
hostfile/known_hosts generator (launch/rendezvous.py) on fake inputs.
The real cluster test is launch/compose-smoke.sh (needs Docker)."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = LAUNCH / "Dockerfile"


def load_rendezvous():
    spec = importlib.util.spec_from_file_location("distnet_launch_rendezvous", LAUNCH / "rendezvous.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


rdv = load_rendezvous()


def child_blocks(body: str, indent: int = 2) -> dict[str, str]:
    """YAML keys at ``indent`` spaces -> their indented bodies (enough for this flat compose
    file); ``indent=0`` gives the top-level blocks."""
    blocks, key = {}, None
    pad = " " * indent
    for line in body.splitlines():
        m = re.match(rf"^{pad}([A-Za-z0-9_.-]+):(.*)$", line)
        if m:
            key = m.group(1)
            blocks[key] = m.group(2) + "\n"
        elif key is not None:
            blocks[key] += line + "\n"
    return blocks


def top_level_blocks(text: str) -> dict[str, str]:
    return child_blocks(text, indent=0)


# ---------------------------------------------------------------- docker-compose.yml

def test_compose_has_coordinator_and_workers():
    text = COMPOSE.read_text()
    assert "\t" not in text, "YAML must not contain tabs"
    top = top_level_blocks(text)
    assert {"services", "volumes", "networks"} <= set(top)
    services = child_blocks(top["services"])
    assert set(services) == {"coordinator", "worker"}
    assert "coordinator" in services["coordinator"] and "worker" in services["worker"]
    # the number of workers is configurable, the training arguments are passed through
    assert re.search(r"scale:\s*\$\{DISTNET_WORKERS:-\d+\}", services["worker"])
    for var in ("DISTNET_WORKERS", "DISTNET_PROCS_PER_NODE", "TRAIN_ARGS", "DISTNET_ELASTIC", "DISTNET_MIN_NODES",
                "DISTNET_MAX_RESTARTS"):
        assert re.search(rf"{var}:\s*\$\{{{var}:-", services["coordinator"]), var


def test_compose_publishes_no_ports_and_uses_a_private_network():
    text = COMPOSE.read_text()
    assert not re.search(r"^\s*ports\s*:", text, re.M), "no host port may be published"
    assert "network_mode" not in text
    top = top_level_blocks(text)
    assert "cluster:" in top["networks"]
    assert text.count("networks: [cluster]") >= 1


def test_compose_named_volume_for_checkpoints_on_the_coordinator():
    top = top_level_blocks(COMPOSE.read_text())
    volumes = child_blocks(top["volumes"])
    assert {"runs", "hostkeys", "clientkey"} <= set(volumes)
    services = child_blocks(top["services"])
    assert re.search(r"-\s*runs:/data\b", services["coordinator"])
    assert "runs:" not in services["worker"], "only the coordinator (rank 0) writes checkpoints"
    # the rendezvous volumes hold public keys only and are tmpfs (empty after each run)
    for name in ("hostkeys", "clientkey"):
        assert "type: tmpfs" in volumes[name], name


def test_compose_builds_the_launch_dockerfile():
    text = COMPOSE.read_text()
    assert "dockerfile: launch/Dockerfile" in text
    assert re.search(r"^version:\s*\"2\.\d\"", text, re.M)  # scale/init need file format 2.2+


def services_and_anchor():
    text = COMPOSE.read_text()
    top = top_level_blocks(text)
    return child_blocks(top["services"]), top["x-node"]


def test_compose_drops_every_capability_and_adds_back_only_what_each_role_needs():
    services, anchor = services_and_anchor()
    assert re.search(r"^\s*cap_drop:\s*\[ALL\]\s*$", anchor, re.M)
    assert re.search(r'^\s*security_opt:\s*\["no-new-privileges:true"\]\s*$', anchor, re.M)
    for name, caps in (("coordinator", {"SETUID", "SETGID"}),
                       ("worker", {"SETUID", "SETGID", "SYS_CHROOT", "KILL", "NET_BIND_SERVICE"})):
        assert "<<: *node" in services[name], name  # inherits cap_drop and no-new-privileges
        m = re.search(r"^\s*cap_add:\s*\[([A-Z_, ]*)\]", services[name], re.M)
        assert m and {c.strip() for c in m.group(1).split(",")} == caps, name
    assert not re.search(r"^\s*privileged:", COMPOSE.read_text(), re.M)


def test_compose_keeps_private_keys_on_tmpfs_and_authorized_keys_read_only():
    services, _ = services_and_anchor()
    assert re.search(r"^\s*- /home/distnet/\.ssh:uid=1000,gid=1000,mode=0700,", services["coordinator"], re.M)
    assert re.search(r"^\s*- /run/distnet:mode=0700,", services["worker"], re.M)
    # one writer per volume: the workers cannot change authorized_keys, the coordinator
    # cannot change the host keys
    assert re.search(r"^\s*- clientkey:/rendezvous/client:ro\b", services["worker"], re.M)
    assert re.search(r"^\s*- hostkeys:/rendezvous/hostkeys\s*(#.*)?$", services["worker"], re.M)
    assert re.search(r"^\s*- clientkey:/rendezvous/client\s*(#.*)?$", services["coordinator"], re.M)
    assert re.search(r"^\s*- hostkeys:/rendezvous/hostkeys:ro\b", services["coordinator"], re.M)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_config_validates():
    out = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------- Dockerfile, .dockerignore

def test_dockerfile_base_user_and_no_keys():
    lines = [l for l in DOCKERFILE.read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")]
    assert lines[0].strip() == "FROM python:3.11-slim"
    text = "\n".join(lines)
    assert re.search(r"useradd\b.*\bdistnet\b", text), "a non-root user for the training processes"
    ssh_layer = next(l for l in DOCKERFILE.read_text().split("\nRUN ") if "openssh-server" in l and "apt-get" in l)
    assert re.search(r"rm -rf [^\n]*/etc/ssh/ssh_host_\*", ssh_layer), \
        "host keys generated by installing openssh-server must be deleted in the same layer"
    # the mpi extra's dependencies come from pyproject.toml, before the source is copied
    assert text.index("optional-dependencies']['mpi']") < text.index("COPY distnet")
    assert "ENTRYPOINT" in text and "entrypoint.sh" in text
    assert not re.search(r"^\s*COPY\s+.*(id_|\.pem|\.key)\b", text, re.M)


def test_dockerignore_keeps_the_context_small():
    rules = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
             if l.strip() and not l.startswith("#")]
    assert rules[0] == "*", "allow-list: everything is excluded unless named"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert {"pyproject.toml", "README.md", "distnet", "launch/entrypoint.sh", "launch/rendezvous.py"} <= allowed
    assert not any(a.startswith((".venv", ".git", "tests")) for a in allowed)
    for path in allowed:
        assert (ROOT / path).exists(), path


def test_no_private_key_material_in_launch_files():
    paths = [p for p in LAUNCH.rglob("*") if p.is_file()] + [COMPOSE, ROOT / ".dockerignore"]
    for path in paths:
        data = path.read_bytes()
        assert not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY", data), path
        assert not re.search(rb"AAAA[0-9A-Za-z+/]{60,}", data), f"key material in {path}"
    assert not any(p.name.startswith(("id_rsa", "id_ed25519", "ssh_host_")) for p in paths)


def test_scripts_are_executable_and_parse():
    for name in ("entrypoint.sh", "compose-smoke.sh"):
        path = LAUNCH / name
        assert path.stat().st_mode & 0o111, f"{name} is not executable"
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0, name


# ---------------------------------------------------------------- launch/entrypoint.sh

ENTRYPOINT = LAUNCH / "entrypoint.sh"


def sshd_config_lines() -> list[str]:
    text = ENTRYPOINT.read_text()
    block = text[text.index("cat <<SSHD\n"):text.index("\nSSHD\n")]
    return block.splitlines()[1:]


def test_sshd_is_locked_down():
    lines = sshd_config_lines()
    for setting in ("DisableForwarding yes", "PermitUserRC no", "PermitRootLogin no", "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no", "PermitUserEnvironment no", "AllowUsers $RUNAS",
                    "AuthorizedKeysFile $AUTH_KEYS", "HostKey $keydir/ssh_host_ed25519_key"):
        assert setting in lines, setting
    grace = next(int(l.split()[1]) for l in lines if l.startswith("LoginGraceTime "))
    assert 0 < grace <= 30, "a short LoginGraceTime"
    text = ENTRYPOINT.read_text()
    assert 'AUTH_KEYS=$RDV/client/authorized_keys' in text
    assert "keydir=/run/distnet" in text  # the tmpfs of docker-compose.yml


def test_the_shared_public_key_is_restricted():
    text = ENTRYPOINT.read_text()
    assert "printf 'restrict %s\\n' \"$pub\" >\"$tmp\"" in text
    assert 'mv -f "$tmp" "$AUTH_KEYS"' in text


def test_root_never_writes_into_a_directory_distnet_owns():
    """Everything under distnet's home (keys, ssh config, known_hosts, hostfile) is written
    by distnet: no root redirection or copy into it, the rendezvous coordinator runs as
    distnet, and chown never follows a symlink."""
    text = ENTRYPOINT.read_text()
    coordinator = text[text.index("coordinator() {"):text.index("\ncase \"$role\"")]
    assert not re.search(r'>\s*"?\$(ssh_dir|HOME_DIR|known)', coordinator), "root redirects into distnet's files"
    assert not re.search(r'^\s*(install|cp|mv|ln|touch|cat)\b[^\n]*"\$(ssh_dir|HOME_DIR)', coordinator, re.M)
    assert 'as_user "$PY" "$HERE/rendezvous.py" coordinator' in coordinator
    code = re.sub(r'"[^"\n]*"', '""', text)  # commands only, not the messages
    assert re.search(r"\bchown -h\b", code) and not re.search(r"\bchown (?!-h)", code)
    assert 'pub=$(as_user cat "$ssh_dir/id_ed25519.pub")' in coordinator  # root does not even read them


def run_entrypoint(tmp_path, role, **env):
    """The entry point with an ``id`` that says uid 1000: past the settings check it stops
    at once ("must start as root"), so nothing is done to this machine."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir(exist_ok=True)
    (fakebin / "id").write_text("#!/bin/sh\necho 1000\n")
    (fakebin / "id").chmod(0o755)
    full_env = {"PATH": f"{fakebin}:/usr/bin:/bin", "DISTNET_RENDEZVOUS": str(tmp_path / "rdv"), **env}
    return subprocess.run(["bash", str(ENTRYPOINT), role], env=full_env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("role", ["worker", "coordinator"])
@pytest.mark.parametrize("var, value", [
    ("DISTNET_SSH_PORT", "abc"), ("DISTNET_SSH_PORT", "0"), ("DISTNET_SSH_PORT", "65536"),
    ("DISTNET_SSH_PORT", "022"), ("DISTNET_SSH_PORT", "22 -oProxyCommand=x"), ("DISTNET_SSH_PORT", "-1"),
    ("DISTNET_HOSTKEY_CHECK", "no"), ("DISTNET_HOSTKEY_CHECK", "off"), ("DISTNET_HOSTKEY_CHECK", "Yes"),
    ("DISTNET_HOSTKEY_CHECK", "accept_new"), ("DISTNET_HOSTKEY_CHECK", "ask"),
    ("DISTNET_IFACE", "eth0;id"), ("DISTNET_KNOWN_HOSTS", "/no/such/known_hosts"),
    ("DISTNET_HOST_KEY", "/no/such/key"),
    ("DISTNET_ELASTIC", "yes"), ("DISTNET_ELASTIC", "true"), ("DISTNET_MIN_NODES", "0"),
    ("DISTNET_MIN_NODES", "two"), ("DISTNET_MAX_RESTARTS", "-1"), ("DISTNET_MAX_RESTARTS", "3 --x"),
])
def test_a_bad_setting_is_an_error_not_a_weaker_mode(tmp_path, role, var, value):
    r = run_entrypoint(tmp_path, role, **{var: value})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"distnet: error: {var}: "), r.stderr
    assert not (tmp_path / "rdv").exists()


@pytest.mark.parametrize("role", ["worker", "coordinator"])
@pytest.mark.parametrize("env", [{}, {"DISTNET_SSH_PORT": "2222", "DISTNET_HOSTKEY_CHECK": "accept-new"},
                                 {"DISTNET_SSH_PORT": "65535", "DISTNET_HOSTKEY_CHECK": "yes", "DISTNET_IFACE": "eth1"},
                                 {"DISTNET_ELASTIC": "1", "DISTNET_MIN_NODES": "2", "DISTNET_MAX_RESTARTS": ""},
                                 {"DISTNET_ELASTIC": "0", "DISTNET_MAX_RESTARTS": "3"}])
def test_the_documented_settings_pass_the_check(tmp_path, role, env):
    r = run_entrypoint(tmp_path, role, **env)
    assert r.returncode == 1 and "must start as root" in r.stderr, r.stderr


def test_elastic_mode_runs_the_launcher_elastic_without_a_fixed_rank_count():
    """DISTNET_ELASTIC=1: --elastic with --min-nodes and no -n (the live nodes' slots decide);
    otherwise -n and --max-restarts as before."""
    coordinator = ENTRYPOINT.read_text().split("\ncoordinator() {", 1)[1]
    assert 'local scale=(-n "$nprocs" --max-restarts "${DISTNET_MAX_RESTARTS:-0}")' in coordinator
    elastic_branch = coordinator.split('if [ "${DISTNET_ELASTIC:-0}" = 1 ]; then', 1)[1].split("\n  fi\n", 1)[0]
    assert 'scale=(--elastic --min-nodes "${DISTNET_MIN_NODES:-1}"' in elastic_branch
    assert "-n " not in elastic_branch
    assert '-m distnet.launch "${scale[@]}" --hostfile "$ssh_dir/hostfile"' in coordinator
    # before each start: rendezvous.py refresh with the coordinator's own arguments, no waiting
    assert 'refresh_args=("$PY" "$HERE/rendezvous.py" refresh --self-address "$me")' in coordinator
    assert "--expect|--timeout) skip=1; continue ;;" in coordinator
    assert '--refresh-command "$(printf \'%q \' "${refresh_args[@]}")"' in coordinator


# ---------------------------------------------------------------- launch/rendezvous.py

def test_write_atomic_replaces_a_planted_symlink_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "hostfile"
    target.symlink_to(victim)
    rdv.write_atomic(target, "node:1\n", mode=0o600)
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and target.read_text() == "node:1\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostfile", "victim"]  # no temporary left


def test_write_atomic_never_opens_an_existing_name(tmp_path, monkeypatch):
    """The temporary name is random and opened with O_EXCL|O_NOFOLLOW: a link planted
    under the name it picks makes it fail, not write through the link."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    monkeypatch.setattr(rdv.secrets, "token_hex", lambda n: "guessed")
    (tmp_path / ".hostfile.guessed.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError):
        rdv.write_atomic(tmp_path / "hostfile", "node:1\n")
    assert victim.read_text() == "precious\n" and not (tmp_path / "hostfile").exists()


def test_iface_address():
    assert rdv.iface_address("lo") == "127.0.0.1"
    with pytest.raises(ValueError, match="no-such-if"):
        rdv.iface_address("no-such-if")
    r = subprocess.run([sys.executable, str(LAUNCH / "rendezvous.py"), "iface-address", "lo"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == "127.0.0.1\n"


def test_hostfile_puts_the_coordinator_first():
    lines = rdv.hostfile_lines("10.0.0.9", ["10.0.0.3", "10.0.0.4"], 2)
    assert lines == ["10.0.0.9:2", "10.0.0.3:2", "10.0.0.4:2"]
    assert rdv.total_slots(lines) == 6
    assert rdv.hostfile_lines("10.0.0.9", [], 1) == ["10.0.0.9:1"]  # one container
    # the coordinator is never listed twice, even if the worker name resolves to it
    assert rdv.hostfile_lines("10.0.0.9", ["10.0.0.9", "10.0.0.3"], 1) == ["10.0.0.9:1", "10.0.0.3:1"]
    with pytest.raises(ValueError):
        rdv.hostfile_lines("10.0.0.9", ["10.0.0.3"], 0)


def test_addresses_sort_numerically():
    assert rdv.sort_addresses(["10.0.0.10", "10.0.0.9", "10.0.0.9", "node-b"]) == ["10.0.0.9", "10.0.0.10", "node-b"]


def test_parse_hostfile():
    text = "# cluster\nnode-a:4\n\nnode-b   # two\nnode-c:2\n"
    assert rdv.parse_hostfile(text) == [("node-a", 4), ("node-b", 1), ("node-c", 2)]
    for bad in ("", "# nothing\n", "node:0\n"):
        with pytest.raises(ValueError):
            rdv.parse_hostfile(bad)


def test_known_hosts_from_published_keys(tmp_path):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake worker@x"
    (tmp_path / "10.0.0.3.pub").write_text(key + "\n")
    (tmp_path / "10.0.0.4.pub").write_text("garbage\n")
    lines, missing = rdv.known_hosts_lines(["10.0.0.3", "10.0.0.4", "10.0.0.5"], tmp_path)
    assert lines == ["10.0.0.3 " + " ".join(key.split()[:2])]
    assert missing == ["10.0.0.4", "10.0.0.5"]
    lines, _ = rdv.known_hosts_lines(["10.0.0.3"], tmp_path, port=2222)
    assert lines[0].startswith("[10.0.0.3]:2222 ssh-ed25519 ")


def test_coordinator_command_with_a_given_hostfile(tmp_path, monkeypatch):
    """Real-hosts mode end to end: a fake ssh server on loopback, a published host key."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]

    def serve():
        for _ in range(8):
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"SSH-2.0-fake\r\n")
                conn.recv(64)

    threading.Thread(target=serve, daemon=True).start()
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "127.0.0.1.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake\n")
    hostfile_in = tmp_path / "hosts.in"
    hostfile_in.write_text("coordinator-host:2\n127.0.0.1:2\n")
    out_hosts, out_known = tmp_path / "hostfile", tmp_path / "known_hosts"
    proc = subprocess.run(
        [sys.executable, str(LAUNCH / "rendezvous.py"), "coordinator", "--hostfile-in", str(hostfile_in),
         "--keydir", str(keys), "--port", str(port), "--hostfile", str(out_hosts),
         "--known-hosts", str(out_known), "--self-address", "coordinator-host", "--timeout", "20"],
        capture_output=True, text=True, timeout=60)
    server.close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "4"
    assert out_hosts.read_text() == "coordinator-host:2\n127.0.0.1:2\n"
    assert out_known.read_text() == f"[127.0.0.1]:{port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake\n"


def test_coordinator_command_gives_up_when_workers_do_not_come(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(LAUNCH / "rendezvous.py"), "coordinator", "--service", "no-such-host.invalid",
         "--expect", "2", "--keydir", str(tmp_path), "--hostfile", str(tmp_path / "h"),
         "--known-hosts", str(tmp_path / "k"), "--self-address", "127.0.0.1", "--timeout", "1"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "expected 2" in proc.stderr
    assert not (tmp_path / "h").exists()


def test_register_publishes_the_host_key(tmp_path, monkeypatch):
    pub = tmp_path / "host.pub"
    pub.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake root@w\n")
    monkeypatch.setenv("DISTNET_ADVERTISE_ADDR", "10.1.2.3")
    assert rdv.main(["register", "--keydir", str(tmp_path / "keys"), "--pubkey", str(pub)]) == 0
    assert (tmp_path / "keys" / "10.1.2.3.pub").read_text() == pub.read_text()
    assert (tmp_path / "keys" / f"{socket_hostname()}.pub").exists()


def socket_hostname():
    import socket
    return socket.gethostname()


def test_refresh_rewrites_the_hostfile_from_the_workers_there_now(tmp_path, monkeypatch):
    """The elastic coordinator's refresh before each start: the workers DNS answers with now,
    those without a published host key left out (strict checking would refuse them; with
    trust on first use they stay), known_hosts rewritten with the current keys (a worker
    started again has a new one), the coordinator first; no waiting."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "10.0.0.3.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINew worker@3\n")
    (keys / "10.0.0.5.pub").write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFive worker@5\n")
    monkeypatch.setattr(rdv, "resolve", lambda name: ["10.0.0.2", "10.0.0.3", "10.0.0.4"] if name == "worker" else [])
    out_hosts, out_known = tmp_path / "hostfile", tmp_path / "known_hosts"
    common = ["refresh", "--keydir", str(keys), "--ppn", "2", "--hostfile", str(out_hosts), "--self-address", "10.0.0.2"]
    assert rdv.main([*common, "--known-hosts", str(out_known)]) == 0
    assert out_hosts.read_text() == "10.0.0.2:2\n10.0.0.3:2\n"  # 10.0.0.4 has no key yet
    assert out_known.read_text() == "10.0.0.3 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINew\n"
    assert rdv.main([*common, "--known-hosts", str(out_known), "--trust-on-first-use"]) == 0
    assert out_hosts.read_text() == "10.0.0.2:2\n10.0.0.3:2\n10.0.0.4:2\n"
    hostfile_in = tmp_path / "hosts.in"
    hostfile_in.write_text("10.0.0.2:1\n10.0.0.5:4\n")
    assert rdv.main([*common, "--known-hosts", str(out_known), "--hostfile-in", str(hostfile_in)]) == 0
    assert out_hosts.read_text() == "10.0.0.2:1\n10.0.0.5:4\n"
    assert out_known.read_text() == "10.0.0.5 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFive\n"
