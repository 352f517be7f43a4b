"""distnet under a real Slurm: launch/slurm/train.sbatch and ``srun --mpi=pmi2`` train the
same model as one process, and a job stopped by the time-limit signal checkpoints, requeues
itself and finishes from its checkpoint.

The test brings up a one-node cluster from Debian's packages (``apt-get install slurm-wlm
munge``; .ci/run installs them): its own munged, slurmctld and slurmd, with a minimal
slurm.conf in a temporary directory (``SLURM_CONF``), on 127.0.0.1 and free ports, as root
(slurmd starts tasks as the submitting user).  Nothing system-wide is configured or started,
and everything is stopped at the end.
"""
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, run_train
from distnet.errors import UserError

SBATCH_SCRIPT = REPO / "launch" / "slurm" / "train.sbatch"
DAEMONS = ("munged", "slurmctld", "slurmd", "srun", "sbatch", "scontrol", "sinfo", "scancel", "squeue")
NODE = "distnet1"
TRAIN = ["--dataset", "synthetic", "--model", "lenet5", "--batch-size", "32", "--optimizer", "sgd",
         "--lr", "0.01", "--schedule", "constant", "--warmup-steps", "0", "--eval-every", "0", "--epochs", "10"]  # 300 steps fit (the default is 6 epochs)
STEPS = 300  # long enough (a few seconds) for the signal in the requeue test to land mid-run


def _sbin(name):
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def _die_with_parent():
    """Daemons get SIGTERM if this test process dies (killed by a CI timeout, say)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Slurm:
    """A one-node Slurm cluster owned by this test session."""

    def __init__(self, root: Path):
        self.root = root
        self.procs = []
        self.munge_socket = root / "munge" / "munge.socket"
        self.conf = root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf), PYTHONPATH=str(REPO), DISTNET_OFFLINE="1",
                        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                        DISTNET_PYTHON=sys.executable)

    def _daemon(self, name, *args):
        log = open(self.root / f"{name}.stdout", "w")
        proc = subprocess.Popen([_sbin(name), *args], stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True, preexec_fn=_die_with_parent)
        self.procs.append(proc)
        return proc

    def start(self):
        (self.root / "munge").mkdir(mode=0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._daemon("munged", "--foreground", "--force", f"--socket={self.munge_socket}", f"--key-file={key}",
                     f"--pid-file={self.root / 'munge' / 'munged.pid'}", f"--log-file={self.root / 'munged.log'}",
                     f"--seed-file={self.root / 'munge' / 'munged.seed'}")
        self._wait(lambda: self.munge_socket.exists(), "munged did not create its socket")
        for d in ("state", "spool"):
            (self.root / d).mkdir()
        host = socket.gethostname().split(".")[0]
        r = self.root
        self.conf.write_text(f"""\
ClusterName=distnettest
FirstJobId={random.randrange(10_000, 1_000_000)}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SwitchType=switch/none
InactiveLimit=0
KillWait=30
MinJobAge=600
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=test Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")
        self._daemon("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._daemon("slurmd", "-D", "-N", NODE, "-f", str(self.conf))
        self._wait(lambda: self.run("sinfo", "-h", "-n", NODE, "-o", "%t", check=False).stdout.strip()
                   in ("idle", "mix", "alloc"), "the node did not come up idle")

    def _wait(self, ready, what, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            for p in self.procs:
                if p.poll() is not None:
                    raise AssertionError(f"{what}: {p.args[0]} exited with {p.returncode}\n{self.logs()}")
            time.sleep(0.3)
        raise AssertionError(f"{what} within {timeout} s\n{self.logs()}")

    def logs(self):
        out = []
        for f in sorted(self.root.glob("*.log")) + sorted(self.root.glob("*.stdout")):
            out.append(f"--- {f.name}\n{f.read_text(errors='replace')[-2000:]}")
        return "\n".join(out)

    def run(self, *cmd, check=True, timeout=300, env=None):
        r = subprocess.run([_sbin(cmd[0]), *cmd[1:]], env=env or self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check:
            assert r.returncode == 0, f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}\n{r.stderr}\n{self.logs()}"
        return r

    def state(self, job_id):
        out = self.run("scontrol", "show", "job", job_id, "-o", check=False).stdout
        fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
        return fields.get("JobState"), int(fields.get("Restarts", 0))

    def stop(self):
        """Cancel every job (their tasks would outlive slurmd), then stop the daemons."""
        if self.procs and self.procs[-1].poll() is None:
            self.run("scancel", "--full", "--user=root", check=False, timeout=30)
            deadline = time.monotonic() + 40
            while self.run("squeue", "-h", check=False, timeout=30).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [d for d in DAEMONS if not _sbin(d)]
    if missing:
        pytest.skip(f"Slurm is not installed (missing {', '.join(missing)}): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("starting a private Slurm (munged, slurmctld, slurmd) needs root")
    cluster = Slurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: the same job on one process, without Slurm."""
    ck = tmp_path_factory.mktemp("one")
    r = run_train(*TRAIN, "--max-steps", STEPS, "--checkpoint-dir", ck, "--no-progress")
    assert r.returncode == 0, r.stderr
    return final_params(ck)


def final_params(ckdir):
    with np.load(Path(ckdir) / "latest.npz", allow_pickle=False) as ck:
        return ck["params"].copy(), int(ck["step"])


def assert_same_params(params, ref):
    np.testing.assert_allclose(params, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


def test_srun_pmi2_two_tasks_match_one_process(slurm, one_process, tmp_path):
    ck = tmp_path / "ck"
    r = slurm.run("srun", "--mpi=pmi2", "-n", "2", "--cpus-per-task=1", sys.executable, "-m", "distnet.train",
                  *TRAIN, "--max-steps", str(STEPS), "--checkpoint-dir", str(ck), "--no-progress")
    assert "2 rank(s)" in r.stdout + r.stderr, r.stdout + r.stderr
    params, step = final_params(ck)
    assert step == STEPS
    assert_same_params(params, one_process[0])


def test_srun_without_pmi_is_refused(slurm, tmp_path):
    """``srun --mpi=none`` gives the tasks no MPI wire-up: each would train alone and all would
    write the same checkpoint.  Every task refuses with one line and exit code 2."""
    r = slurm.run("srun", "--mpi=none", "-n", "2", sys.executable, "-m", "distnet.train", *TRAIN,
                  "--max-steps", "5", "--checkpoint-dir", str(tmp_path / "ck"), check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("distnet: error: srun: 2 tasks")]
    assert len(errors) == 2 and "--mpi=pmi2" in errors[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize("env, size", [
    ({"SLURM_STEP_NUM_TASKS": "4", "PMI_SIZE": "4", "PMI_FD": "11"}, 4),   # srun --mpi=pmi2
    ({"SLURM_STEP_NUM_TASKS": "4", "PMIX_NAMESPACE": "slurm.pmix.7.0", "PMIX_RANK": "1"}, 4),  # --mpi=pmix
    ({"SLURM_STEP_NUM_TASKS": "1"}, 1),   # srun -n 1
    ({"SLURM_NTASKS": "4"}, 1),           # the batch script itself, outside any srun step
    ({"OMPI_COMM_WORLD_SIZE": "3"}, 3),   # Open MPI's mpirun
])
def test_world_size_from_launcher_environment(monkeypatch, env, size):
    from distnet.distributed import launched_world_size
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "SLURM_STEP_NUM_TASKS",
                "PMIX_NAMESPACE", "PMIX_RANK"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert launched_world_size() == size


def test_srun_tasks_without_pmi_are_a_user_error(monkeypatch):
    from distnet.distributed import launched_world_size
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "PMIX_NAMESPACE", "PMIX_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    with pytest.raises(UserError, match="--mpi=pmi2"):
        launched_world_size()


def submit(slurm, workdir, *train_args, env=None, wait=True):
    """sbatch -n 2 the script as job "t" in workdir; with wait, return once it has completed
    (polled here: ``sbatch --wait`` backs off to polling every 10 s or so)."""
    workdir.mkdir(exist_ok=True)
    r = slurm.run("sbatch", "--parsable", "-n", "2", f"--chdir={workdir}", "-J", "t", str(SBATCH_SCRIPT),
                  *TRAIN, *train_args, env=dict(slurm.env, **(env or {})))
    job = r.stdout.strip().split(";")[0]
    if wait:
        wait_for_state(slurm, job, ("COMPLETED", 0), settled=("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"),
                       log=workdir / f"distnet-t-{job}.out")
    return job


def test_sbatch_script_matches_one_process(slurm, one_process, tmp_path):
    job = submit(slurm, tmp_path, "--max-steps", str(STEPS))
    log = (tmp_path / f"distnet-t-{job}.out").read_text()
    assert "2 rank(s)" in log, log
    params, step = final_params(tmp_path / "runs" / "t")  # the script's default: runs/<job name>
    assert step == STEPS
    assert_same_params(params, one_process[0])


def wait_for_state(slurm, job, state, timeout=120, settled=(), log=None):
    deadline = time.monotonic() + timeout
    while (now := slurm.state(job)) != state:
        job_log = log.read_text() if log is not None and log.exists() else ""
        assert now[0] not in settled, f"job {job}: {now}, not {state}\n{job_log}\n{slurm.logs()}"
        assert time.monotonic() < deadline, f"job {job}: {now}, not {state}\n{job_log}\n{slurm.logs()}"
        time.sleep(0.3)


def test_time_limit_signal_checkpoints_requeues_and_resumes(slurm, one_process, tmp_path):
    """The warning signal Slurm sends before the time limit (B:TERM, here sent by hand with
    ``scancel --batch --signal=TERM``) reaches the ranks through the script's trap; they
    checkpoint and exit 0, the job requeues itself and the second run resumes from that
    checkpoint and ends with the uninterrupted run's parameters."""
    metrics = tmp_path / "metrics.jsonl"
    job = submit(slurm, tmp_path, "--max-steps", str(STEPS), "--log-every", "5", "--metrics", str(metrics),
                 env={"DISTNET_REQUEUE_ON_SIGNAL": "1"}, wait=False)
    deadline = time.monotonic() + 120
    while not (metrics.exists() and '"train"' in metrics.read_text()):  # step 5 of 300: training
        assert time.monotonic() < deadline, f"no training progress\n{slurm.logs()}"
        time.sleep(0.2)
    slurm.run("scancel", "--batch", "--signal=TERM", job)
    wait_for_state(slurm, job, ("PENDING", 1))
    # Slurm holds a requeued job for about two minutes (its BeginTime); let it start now.
    slurm.run("scontrol", "update", f"jobid={job}", "StartTime=now")
    wait_for_state(slurm, job, ("COMPLETED", 1))
    log = (tmp_path / f"distnet-t-{job}.out").read_text()
    assert "stopped by SIGTERM at step" in log and "requeueing job" in log, log
    stopped_at = int(log.split("stopped by SIGTERM at step")[1].split(";")[0])
    assert 0 < stopped_at < STEPS, log
    assert f"resumed from runs/t/latest.npz at step {stopped_at}" in log, log
    params, step = final_params(tmp_path / "runs" / "t")
    assert step == STEPS
    assert_same_params(params, one_process[0])
    steps_logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if '"train"' in line]
    assert max(steps_logged) >= STEPS - 5
