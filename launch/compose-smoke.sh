#!/usr/bin/env bash
# Smoke test of the docker-compose cluster (README.md, "Multi-node training with docker-compose"), run from anywhere:
#
#   launch/compose-smoke.sh              3 nodes x 1 process train cnn2 on MNIST for one epoch;
#                                        checks the checkpoint and metrics in the volume
#   launch/compose-smoke.sh --kill-test  also: kill a worker mid-training (the job must fail
#                                        within 30 s), rerun, and check that it resumed
#   launch/compose-smoke.sh --compare    also: the same job in one container, for the timing
#   launch/compose-smoke.sh --hosts-test also: README's "separate hosts" recipe with plain
#                                        `docker run` (persistent host keys and known_hosts,
#                                        restrict'ed authorized_keys, DISTNET_IFACE), then the
#                                        same job with a wrong known_hosts, which must fail
#   launch/compose-smoke.sh --elastic    also: DISTNET_ELASTIC=1, kill a worker mid-training;
#                                        the job must continue on the other 2 nodes by itself;
#                                        start that worker again, kill the other: it must
#                                        continue on the one that came back; exit 0, and the
#                                        parameters of an uninterrupted run (bitwise:
#                                        --deterministic); prints the time to continue and
#                                        the steps lost
#   launch/compose-smoke.sh --no-base ... skip the 3-node epoch (and its checks): only the
#                                        tests named beside it (CI: --elastic --no-base)
#
# It prepares the machine with ../shared/tools/container-host.sh when docker is not ready,
# uses its own compose project (distnet-smoke), removes it (containers, network, volumes)
# at the end, and exits non-zero on any failure. Environment: SMOKE_WORKERS (2),
# SMOKE_PPN (1), SMOKE_TRAIN_ARGS (--epochs 1),
# SMOKE_MIN_ACCURACY (0.9), SMOKE_KILL_DEADLINE (30 seconds), SMOKE_PROJECT (distnet-smoke:
# another name lets two smoke tests run side by side), SMOKE_IMAGE (distnet-node:latest, the
# tag that is built and run), SMOKE_ELASTIC_TRAIN_ARGS, SMOKE_ELASTIC_KILL_AT ("25 45": the steps after which a worker dies).
set -euo pipefail

# The whole script is one function, parsed before it runs: editing the file while it runs
# (e.g. a git checkout) cannot change what a running smoke test does.
main() {
cd "$(dirname "$0")/.."
ROOT=$PWD

KILL_TEST=0 COMPARE=0 HOSTS_TEST=0 ELASTIC_TEST=0 BASE=1
for arg in "$@"; do
  case "$arg" in
    --kill-test) KILL_TEST=1 ;;
    --elastic) ELASTIC_TEST=1 ;;
    --no-base) BASE=0 ;;
    --compare) COMPARE=1 ;;
    --hosts-test) HOSTS_TEST=1 ;;
    -h|--help) sed -n '2,/^set -e/{/^set -e/!p}' "$0"; exit 0 ;;
    *) echo "compose-smoke: unknown argument $arg" >&2; exit 2 ;;
  esac
done

PROJECT=${SMOKE_PROJECT:-distnet-smoke}
[[ $PROJECT =~ ^[a-z0-9][a-z0-9_-]*$ ]] || { echo "compose-smoke: SMOKE_PROJECT: not a compose project name: '$PROJECT'" >&2; exit 2; }
WORKERS=${SMOKE_WORKERS:-2}
PPN=${SMOKE_PPN:-1}
TRAIN=${SMOKE_TRAIN_ARGS:---epochs 1}
MIN_ACC=${SMOKE_MIN_ACCURACY:-0.9}
KILL_DEADLINE=${SMOKE_KILL_DEADLINE:-30}
IMAGE=${SMOKE_IMAGE:-distnet-node:latest}
export DISTNET_IMAGE=$IMAGE   # docker-compose.yml's image: what is built and run
LOGDIR=$(mktemp -d /tmp/compose-smoke.XXXXXX)
T0=$(date +%s)

say() { echo "[compose-smoke +$(( $(date +%s) - T0 ))s] $*"; }
fail() { echo "[compose-smoke] FAILED: $*" >&2; exit 1; }

# 1. Docker, docker-compose and the python:3.11-slim base (the host script is idempotent).
if ! docker info >/dev/null 2>&1 || ! docker image inspect python:3.11-slim >/dev/null 2>&1 \
   || ! { command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1; }; then
  host_script=$ROOT/../shared/tools/container-host.sh
  [ -x "$host_script" ] || host_script=/work/shared/tools/container-host.sh
  say "docker not ready; running $host_script"
  if [ "$(id -u)" = 0 ]; then bash "$host_script"; else sudo bash "$host_script"; fi
fi
if command -v docker-compose >/dev/null; then COMPOSE=(docker-compose); else COMPOSE=(docker compose); fi
dc() { "${COMPOSE[@]}" -p "$PROJECT" -f "$ROOT/docker-compose.yml" "$@"; }

HOSTS_NET=$PROJECT-hosts
hosts_cleanup() {
  docker rm -f "$PROJECT-node0" "$PROJECT-node1" "$PROJECT-node2" "$PROJECT-reference" >/dev/null 2>&1 || true
  docker network rm "$HOSTS_NET" >/dev/null 2>&1 || true
}
cleanup() {
  local rc=$?
  dc down -v --remove-orphans >/dev/null 2>&1 || true
  hosts_cleanup
  if [ $rc -ne 0 ]; then echo "[compose-smoke] logs kept in $LOGDIR" >&2; else rm -rf "$LOGDIR"; fi
  exit $rc
}
trap cleanup EXIT
dc down -v --remove-orphans >/dev/null 2>&1 || true   # leftovers of an interrupted run

project_ids() { docker ps -q --filter "label=com.docker.compose.project=$PROJECT" "$@"; }
runs_volume() {
  docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT" \
                      --filter "label=com.docker.compose.volume=runs"
}
# step of latest.npz and the last eval accuracy of metrics.jsonl in the runs volume
read_results() {
  local vol
  vol=$(runs_volume)
  [ -n "$vol" ] || fail "no runs volume for project $PROJECT"
  docker run --rm --network none -v "$vol:/v:ro" "$IMAGE" python -c '
import json, numpy as np
z = np.load("/v/checkpoints/latest.npz", allow_pickle=False)
step, params = int(z["step"]), z["params"]
assert params.ndim == 1 and params.size > 0 and np.isfinite(params).all(), "bad params in latest.npz"
evals = [json.loads(l) for l in open("/v/metrics.jsonl") if l.strip()]
evals = [e for e in evals if e.get("event") == "eval"]
print(step, *((evals[-1]["step"], evals[-1]["accuracy"]) if evals else ("none", "none")))'
}
# The containers' confinement, from docker itself (works on stopped containers): every
# capability dropped but the role's own, no-new-privileges, the key directories on tmpfs,
# authorized_keys read-only on the workers, and no private key in any writable layer.
check_confinement() {
  local id service want tmpfs_dir
  for id in $(project_ids -a); do
    service=$(docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}}' "$id")
    case "$service" in
      coordinator) want="SETGID SETUID"; tmpfs_dir=/home/distnet/.ssh ;;
      worker) want="KILL NET_BIND_SERVICE SETGID SETUID SYS_CHROOT"; tmpfs_dir=/run/distnet ;;
      *) fail "unexpected service $service" ;;
    esac
    [ "$(docker inspect -f '{{join .HostConfig.CapDrop " "}}' "$id")" = ALL ] || fail "$service: CapDrop is not ALL"
    [ "$(docker inspect -f '{{join .HostConfig.CapAdd " "}}' "$id" | tr ' ' '\n' | sed 's/^CAP_//' | sort | xargs)" = "$want" ] \
      || fail "$service: CapAdd is not $want"
    docker inspect -f '{{join .HostConfig.SecurityOpt " "}}' "$id" | grep -qw "no-new-privileges:true" \
      || fail "$service: no-new-privileges is not set"
    docker inspect -f '{{range $k, $v := .HostConfig.Tmpfs}}{{$k}} {{end}}' "$id" | grep -qw "$tmpfs_dir" \
      || fail "$service: $tmpfs_dir is not a tmpfs"
    if [ "$service" = worker ]; then
      [ "$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/rendezvous/client"}}{{.RW}}{{end}}{{end}}' "$id")" = false ] \
        || fail "worker: /rendezvous/client (authorized_keys) is not mounted read-only"
    fi
    if docker diff "$id" | grep -E "id_ed25519|ssh_host_|\.ssh/"; then
      fail "$service: key material in the container's writable layer (docker diff above)"
    fi
  done
}
# The same, seen from inside running containers: the kernel's view of capabilities and
# no_new_privs, the tmpfs mounts, a read-only authorized_keys with `restrict`, sshd's settings.
check_confinement_live() {
  local coordinator=$1 worker=$2 out
  for id in "$coordinator" "$worker"; do
    docker exec "$id" grep -q "^NoNewPrivs:[[:space:]]*1" /proc/1/status || fail "no_new_privs is off in $id"
  done
  # CapBnd: SETGID(6) SETUID(7) = 0xc0; the worker adds KILL(5) NET_BIND_SERVICE(10) SYS_CHROOT(18) = 0x404e0
  docker exec "$coordinator" grep -q "^CapBnd:[[:space:]]*00000000000000c0$" /proc/1/status || fail "coordinator: capability bounding set"
  docker exec "$worker" grep -q "^CapBnd:[[:space:]]*00000000000404e0$" /proc/1/status || fail "worker: capability bounding set"
  [ "$(docker exec "$coordinator" stat -f -c %T /home/distnet/.ssh)" = tmpfs ] || fail "coordinator: ~/.ssh is not a tmpfs"
  [ "$(docker exec "$worker" stat -f -c %T /run/distnet)" = tmpfs ] || fail "worker: /run/distnet is not a tmpfs"
  docker exec "$worker" grep -q "^restrict ssh-ed25519 " /rendezvous/client/authorized_keys || fail "authorized_keys lacks restrict"
  if docker exec "$worker" sh -c 'echo x >>/rendezvous/client/authorized_keys' 2>/dev/null; then
    fail "a worker can write authorized_keys"
  fi
  out=$(docker exec "$worker" /usr/sbin/sshd -T -f /run/distnet/sshd_config)
  for setting in "disableforwarding yes" "permituserrc no" "logingracetime 15" "permitrootlogin no" "passwordauthentication no"; do
    grep -qx "$setting" <<<"$out" || fail "worker sshd: '$setting' not in effect"
  done
  say "confinement checked in running containers (capabilities, no_new_privs, tmpfs keys, read-only restrict'ed authorized_keys, sshd settings)"
}
# run the cluster in the foreground: up_job LOG WORKERS TRAIN_ARGS; sets UP_RC and UP_SECONDS
up_job() {
  local log=$1 workers=$2 train=$3 start
  start=$(date +%s.%N)
  set +e
  DISTNET_WORKERS=$workers DISTNET_PROCS_PER_NODE=$PPN TRAIN_ARGS=$train \
    dc up --exit-code-from coordinator --abort-on-container-exit >"$log" 2>&1
  UP_RC=$?
  set -e
  UP_SECONDS=$(python3 -c "import sys, time; print(round(time.time() - float(sys.argv[1]), 1))" "$start")
}

# 2. Build (layers cached after the first time).
say "building $IMAGE"
dc build >"$LOGDIR/build.log" 2>&1 || { tail -30 "$LOGDIR/build.log" >&2; fail "docker-compose build"; }
# No key in the image: no sshd host keys, no private key where ssh or the launcher look.
found=$(docker run --rm --network none "$IMAGE" sh -c \
  'ls /etc/ssh/ssh_host_* 2>/dev/null; grep -rlsIE -e "BEGIN [A-Z ]*PRIVATE KEY" /etc/ssh /home /root /opt/distnet-launch /run /rendezvous /data 2>/dev/null' || true)
[ -z "$found" ] || fail "the image contains key material: $found"

# 3. The job: 1 coordinator + WORKERS workers, PPN processes each.
nodes=$((WORKERS + 1))
MULTI_SECONDS=none
if [ $BASE = 1 ]; then
say "training on $nodes nodes x $PPN process(es): TRAIN_ARGS=$TRAIN"
up_job "$LOGDIR/up.log" "$WORKERS" "$TRAIN"
grep -E "coordinator" "$LOGDIR/up.log" | grep -vE "^(Creating|Starting|Stopping)" | tail -8 || true
[ "$UP_RC" = 0 ] || { tail -40 "$LOGDIR/up.log" >&2; fail "docker-compose up exited with $UP_RC"; }
[ -z "$(project_ids)" ] || fail "containers still running after the job: $(project_ids)"
grep -q "$nodes node(s)" "$LOGDIR/up.log" || fail "the coordinator did not see $nodes nodes"
read -r step eval_step acc < <(read_results) || fail "cannot read the checkpoint/metrics"
say "3-node job: exit 0 in ${UP_SECONDS}s; latest.npz at step $step; last eval (step $eval_step) accuracy $acc"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) >= float(sys.argv[2]) else 1)" "$acc" "$MIN_ACC" \
  || fail "accuracy $acc < $MIN_ACC"
[ "$step" = "$eval_step" ] || fail "checkpoint step $step != last eval step $eval_step"
MULTI_SECONDS=$UP_SECONDS
check_confinement
! grep -E "Operation not permitted|Permission denied" "$LOGDIR/up.log" || fail "a capability is missing (see above)"
say "confinement checked with docker inspect/diff on all $nodes containers"
fi

# 4. Optional: the same job in one container (no workers).
if [ $COMPARE = 1 ]; then
  dc down -v >/dev/null 2>&1
  say "the same job in 1 container"
  up_job "$LOGDIR/up-single.log" 0 "$TRAIN"
  [ "$UP_RC" = 0 ] || { tail -40 "$LOGDIR/up-single.log" >&2; fail "1-container run exited with $UP_RC"; }
  read -r step eval_step acc < <(read_results)
  say "1-container job: exit 0 in ${UP_SECONDS}s; step $step; accuracy $acc"
  say "wall time: $nodes nodes ${MULTI_SECONDS}s, 1 node ${UP_SECONDS}s"
fi

# 5. Optional: lose a worker mid-training, then rerun and resume.
if [ $KILL_TEST = 1 ]; then
  dc down -v >/dev/null 2>&1
  kill_train=${SMOKE_KILL_TRAIN_ARGS:---epochs 1 --max-steps 200 --checkpoint-every 25}
  say "kill test: TRAIN_ARGS=$kill_train"
  ( up_job "$LOGDIR/kill.log" "$WORKERS" "$kill_train"; echo "$UP_RC" >"$LOGDIR/kill.rc"; date +%s.%N >"$LOGDIR/kill.end" ) &
  up_pid=$!
  coordinator=""
  for _ in $(seq 1 600); do   # until rank 0 has written a checkpoint past step 25
    coordinator=$(project_ids --filter label=com.docker.compose.service=coordinator | head -1)
    if [ -n "$coordinator" ] && docker exec "$coordinator" sh -c \
         'ls /data/checkpoints 2>/dev/null | grep -qE "^ckpt-0*([5-9][0-9]|[1-9][0-9][0-9]+)\.npz$"' 2>/dev/null; then
      break
    fi
    [ -e "$LOGDIR/kill.end" ] && { cat "$LOGDIR/kill.log" >&2; fail "the job ended before the kill"; }
    sleep 1
  done
  victim=$(project_ids --filter label=com.docker.compose.service=worker | head -1)
  [ -n "$victim" ] || fail "no running worker to kill"
  check_confinement_live "$coordinator" "$victim"
  killed_at=$(date +%s.%N)
  docker kill "$victim" >/dev/null
  say "killed worker container $(docker inspect -f '{{.Name}}' "$victim")"
  wait "$up_pid" || true
  kill_rc=$(cat "$LOGDIR/kill.rc")
  took=$(python3 -c "import sys; print(round(float(open(sys.argv[1]).read()) - float(sys.argv[2]), 1))" "$LOGDIR/kill.end" "$killed_at")
  grep -E "coordinator" "$LOGDIR/kill.log" | tail -6 || true
  say "after the kill: docker-compose up exited with $kill_rc after ${took}s"
  [ "$kill_rc" != 0 ] || fail "the job exited 0 after losing a worker"
  python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) else 1)" "$took" "$KILL_DEADLINE" \
    || fail "the job took ${took}s (> ${KILL_DEADLINE}s) to end after losing a worker"
  [ -z "$(project_ids)" ] || fail "containers still running after the failed job"
  read -r saved _ _ < <(read_results)
  say "last checkpoint before the rerun: step $saved; rerunning the same command"
  up_job "$LOGDIR/resume.log" "$WORKERS" "$kill_train"
  grep -E "coordinator" "$LOGDIR/resume.log" | grep -E "resumed|final" || true
  [ "$UP_RC" = 0 ] || { tail -40 "$LOGDIR/resume.log" >&2; fail "the rerun exited with $UP_RC"; }
  grep -q "resumed from /data/checkpoints/latest.npz at step $saved" "$LOGDIR/resume.log" \
    || fail "the rerun did not resume from step $saved"
  read -r step _ acc < <(read_results)
  say "rerun: resumed at step $saved, finished at step $step (accuracy $acc) in ${UP_SECONDS}s"
fi

# 5b. Optional: elastic continuation (DISTNET_ELASTIC=1). A worker is killed mid-training:
# the launcher must leave it out and resume on the other two nodes by itself. The killed
# worker is then started again (new host key, published), and the other worker is killed:
# the job must resume on the coordinator and the worker that came back. It must exit 0,
# bitwise at the parameters of one uninterrupted process (--deterministic with 6
# micro-batches: divisible by 3 and 2 ranks). Not run with --abort-on-container-exit (a
# dead worker would stop the cluster): `up -d`, then wait for the coordinator. Figures for
# each loss: seconds from the kill to the first step of the restarted job, and the steps
# trained after the last checkpoint (done again), from metrics.jsonl (--log-every 1: one
# record per step, with its time).
if [ $ELASTIC_TEST = 1 ]; then
  dc down -v >/dev/null 2>&1
  elastic_train=${SMOKE_ELASTIC_TRAIN_ARGS:---max-steps 70 --checkpoint-every 10 --log-every 1 --eval-every 0 --deterministic --micro-batches 6}
  read -r kill_1 kill_2 <<<"${SMOKE_ELASTIC_KILL_AT:-25 45}"
  [[ $kill_1 =~ ^[0-9]+$ && $kill_2 =~ ^[0-9]+$ && $kill_2 -gt $kill_1 ]] \
    || fail "SMOKE_ELASTIC_KILL_AT: two increasing step numbers, got '${SMOKE_ELASTIC_KILL_AT:-}'"
  [ "$WORKERS" -ge 2 ] || fail "--elastic needs SMOKE_WORKERS >= 2"
  say "elastic test: DISTNET_ELASTIC=1, $((WORKERS + 1)) nodes, TRAIN_ARGS=$elastic_train; workers die after steps $kill_1 and $kill_2"
  DISTNET_ELASTIC=1 DISTNET_WORKERS=$WORKERS DISTNET_PROCS_PER_NODE=$PPN TRAIN_ARGS=$elastic_train \
    dc up -d >"$LOGDIR/elastic-up.log" 2>&1 || { cat "$LOGDIR/elastic-up.log" >&2; fail "docker-compose up -d"; }
  coordinator=$(project_ids --filter label=com.docker.compose.service=coordinator | head -1)
  [ -n "$coordinator" ] || fail "no coordinator container"
  step_now() {  # the last step in metrics.jsonl, or -1
    local out
    out=$(docker exec "$coordinator" sh -c 'tail -n 1 /data/metrics.jsonl 2>/dev/null' 2>/dev/null \
          | python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["step"])' 2>/dev/null) || out=""
    echo "${out:--1}"
  }
  coordinator_log() { dc logs --no-color coordinator 2>&1 | sed 's/^[^|]*| //'; }
  wait_for_step() {  # wait_for_step N: until the job has trained step N
    for _ in $(seq 1 1500); do
      [ "$(step_now)" -ge "$1" ] && return 0
      [ "$(docker inspect -f '{{.State.Running}}' "$coordinator")" = true ] \
        || { coordinator_log | tail -30 >&2; fail "the elastic job ended before step $1"; }
      sleep 0.2
    done
    fail "the elastic job did not reach step $1"
  }
  ip_of() { docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1"; }
  kill_worker() {  # kill_worker ID: sets KILLED_AT, KILLED_IP
    KILLED_IP=$(ip_of "$1")
    KILLED_AT=$(date +%s.%N)
    docker kill "$1" >/dev/null
    say "killed worker $(docker inspect -f '{{.Name}}' "$1") ($KILLED_IP) at step $(step_now)"
  }
  read -r -a workers_now < <(project_ids --filter label=com.docker.compose.service=worker | xargs)
  [ "${#workers_now[@]}" -ge 2 ] || fail "fewer than 2 running workers"
  first=${workers_now[0]} second=${workers_now[1]}
  wait_for_step "$kill_1"
  kill_worker "$first"; killed_1=$KILLED_AT ip_1=$KILLED_IP
  # back: the same container started again (a new host key, published as at any start)
  for _ in $(seq 1 300); do coordinator_log | grep -q "restart 1 on" && break; sleep 0.2; done
  docker start "$first" >/dev/null
  back_ip=$(ip_of "$first")
  say "started worker $(docker inspect -f '{{.Name}}' "$first") again ($back_ip)"
  wait_for_step "$kill_2"
  kill_worker "$second"; killed_2=$KILLED_AT ip_2=$KILLED_IP
  elastic_rc=$(timeout 600 docker wait "$coordinator") || fail "the elastic job did not end within 600 s"
  coordinator_log >"$LOGDIR/elastic.log"
  docker logs -t "$coordinator" >"$LOGDIR/elastic-timed.log" 2>&1 || true
  grep -E "distnet.launch: (restart|not answering|no longer|using again)|resumed|final" "$LOGDIR/elastic.log" || true
  [ "$elastic_rc" = 0 ] || { tail -40 "$LOGDIR/elastic.log" >&2; fail "the elastic job exited with $elastic_rc"; }
  for ip in "$ip_1" "$ip_2"; do
    grep -qE "(not answering, left out|no longer in the hostfile): .*\b$ip\b" "$LOGDIR/elastic.log" \
      || fail "the launcher did not leave out the killed worker $ip"
  done
  grep -qE "restart 1 on $WORKERS node\(s\).*: [^ ]+, " "$LOGDIR/elastic.log" \
    || fail "the job did not restart on the $WORKERS surviving nodes"
  grep -E "restart 2 on " "$LOGDIR/elastic.log" | grep -qw "$back_ip" \
    || fail "the worker that came back ($back_ip) was not used at the next restart"
  # the same training in one uninterrupted process, into the same volume
  vol=$(runs_volume)
  read -r -a ref_args <<<"$elastic_train"
  docker run --rm --name "$PROJECT-reference" --network none -v "$vol:/v" "$IMAGE" python -m distnet.train "${ref_args[@]}" \
    --checkpoint-dir /v/reference --no-progress >"$LOGDIR/elastic-reference.log" 2>&1 \
    || { tail -20 "$LOGDIR/elastic-reference.log" >&2; fail "the uninterrupted reference run failed"; }
  resumes=$(grep -oE "resumed from /data/checkpoints/latest.npz at step [0-9]+" "$LOGDIR/elastic.log" | awk '{print $NF}' | xargs)
  figures=$(docker run --rm --network none -v "$vol:/v:ro" "$IMAGE" python -c '
import json, sys
import numpy as np
bitwise = "--deterministic" in sys.argv[1]
a = np.load("/v/checkpoints/latest.npz", allow_pickle=False)
b = np.load("/v/reference/latest.npz", allow_pickle=False)
assert int(a["step"]) == int(b["step"]), ("steps", int(a["step"]), int(b["step"]))
p, q = a["params"], b["params"]
rel = float(np.max(np.abs(p - q)) / np.max(np.abs(q)))
print(int(bool(np.array_equal(p, q)) if bitwise else rel <= 1e-5), int(a["step"]), f"{rel:.2g}")
steps = [json.loads(l) for l in open("/v/metrics.jsonl") if l.strip()]
steps = [(r["step"], r["time"]) for r in steps if r.get("event") == "train"]
# Each restarted job logs step (resumed at + 1) first. A step counter going back is not
# enough to find it: a kill right after a checkpoint resumes at the last step logged.
resumes = [int(s) for s in sys.argv[2].split()]
kills = [float(t) for t in sys.argv[3:]]
assert len(resumes) == len(kills), ("resumes in the log", resumes, "kills", len(kills))
for resumed, killed, before in zip(resumes, kills, kills[1:] + [float("inf")]):
    first = [i for i in range(1, len(steps)) if steps[i][0] == resumed + 1 and killed < steps[i][1] < before]
    assert first, ("no step", resumed + 1, "logged after the kill at", killed)
    i = first[-1]  # reached, resumed at, lost, seconds to continue
    print(steps[i - 1][0], resumed, steps[i - 1][0] - resumed, round(steps[i][1] - killed, 1))
' "$elastic_train" "$resumes" "$killed_1" "$killed_2") || fail "cannot compare the checkpoints"
  { read -r same final rel; read -r reached_1 resumed_1 lost_1 took_1; read -r reached_2 resumed_2 lost_2 took_2; } <<<"$figures"
  for resumed in "$resumed_1" "$resumed_2"; do
    grep -q "resumed from /data/checkpoints/latest.npz at step $resumed" "$LOGDIR/elastic.log" \
      || fail "a restarted job did not resume from step $resumed"
  done
  [ "$same" = 1 ] || fail "final parameters differ from the uninterrupted run's (max relative difference $rel)"
  say "elastic: exit 0 at step $final; loss 1: reached step $reached_1, resumed at $resumed_1 ($lost_1 step(s) lost), continued ${took_1}s after the kill"
  say "elastic: loss 2 (after the first worker came back): reached step $reached_2, resumed at $resumed_2 ($lost_2 step(s) lost), continued ${took_2}s after the kill"
  # where the time to continue goes, from the coordinator's log timestamps
  python3 - "$LOGDIR/elastic-timed.log" "$killed_1" "$killed_2" <<'PY' | while read -r line; do say "elastic: $line"; done || true
import datetime, sys
def seconds(stamp):  # docker's RFC 3339 with nanoseconds
    day, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.datetime.fromisoformat(day).replace(tzinfo=datetime.timezone.utc).timestamp() + float("0." + (frac or "0"))
lines = []
for raw in open(sys.argv[1], errors="replace"):
    stamp, _, text = raw.partition(" ")
    try:
        lines.append((seconds(stamp), text))
    except ValueError:
        pass
for n, killed in enumerate(map(float, sys.argv[2:]), 1):
    after = [(t, text) for t, text in lines if t >= killed]
    failed = next((t for t, text in after if "distnet.launch: job failed" in text), None)
    restart = next((t for t, text in after if f"distnet.launch: restart {n} on" in text), None)
    resumed = next((t for t, text in after if "distnet: resumed from" in text), None)
    if None not in (failed, restart, resumed):
        print(f"loss {n}: mpirun ended {failed - killed:.1f}s after the kill; hostfile refresh + probe + "
              f"restart delay {restart - failed:.1f}s; the new job read its checkpoint {resumed - restart:.1f}s later")
PY
  say "elastic: final parameters vs one uninterrupted process: max relative difference $rel ($(grep -q -- --deterministic <<<"$elastic_train" && echo bitwise equal || echo '<= 1e-5'))"
fi

# 6. Optional: the separate-hosts recipe of README.md, each "host" a plain `docker run` on
# a network of its own (no compose, no shared rendezvous volume).
if [ $HOSTS_TEST = 1 ]; then
  dc down -v >/dev/null 2>&1
  hosts_cleanup
  local_dir=$LOGDIR/srv
  mkdir -p "$local_dir"
  say "hosts test: keys made once, outside the containers"
  docker run --rm --network none -v "$local_dir:/w" "$IMAGE" sh -c '
    set -e
    ssh-keygen -q -t ed25519 -N "" -C coordinator -f /w/coordinator_key
    for n in 1 2; do ssh-keygen -q -t ed25519 -N "" -C node$n -f /w/host_key$n; done
    (printf "restrict "; cat /w/coordinator_key.pub) >/w/authorized_keys
    for n in 1 2; do printf "[node$n]:2222 %s\n" "$(cut -d" " -f1,2 /w/host_key$n.pub)"; done >/w/known_hosts
    printf "[node1]:2222 %s\n[node2]:2222 %s\n" "$(cut -d" " -f1,2 /w/host_key2.pub)" "$(cut -d" " -f1,2 /w/host_key1.pub)" >/w/wrong_known_hosts
    printf "node0:1\nnode1:1\nnode2:1\n" >/w/hostfile
    chmod 644 /w/authorized_keys /w/known_hosts /w/wrong_known_hosts /w/hostfile'
  docker network create "$HOSTS_NET" >/dev/null
  confined=(--cap-drop ALL --cap-add SETUID --cap-add SETGID --security-opt no-new-privileges:true --shm-size 256m)
  for n in 1 2; do
    docker run -d --name $PROJECT-node$n --hostname node$n --network "$HOSTS_NET" --network-alias node$n \
      "${confined[@]}" --cap-add SYS_CHROOT --cap-add KILL --cap-add NET_BIND_SERVICE \
      --tmpfs /run/distnet:mode=0700,size=1m \
      -e DISTNET_SSH_PORT=2222 -e DISTNET_IFACE=eth0 \
      -e DISTNET_HOST_KEY=/etc/distnet/host_key -v "$local_dir/host_key$n:/etc/distnet/host_key:ro" \
      -v "$local_dir/authorized_keys:/rendezvous/client/authorized_keys:ro" "$IMAGE" worker >/dev/null
  done
  hosts_job() {   # hosts_job LOG KNOWN_HOSTS: the coordinator in the foreground; sets UP_RC
    set +e
    docker run --rm --name $PROJECT-node0 --hostname node0 --network "$HOSTS_NET" --network-alias node0 \
      "${confined[@]}" --tmpfs /home/distnet/.ssh:uid=1000,gid=1000,mode=0700,size=1m \
      -e DISTNET_HOSTFILE=/etc/distnet/hostfile -v "$local_dir/hostfile:/etc/distnet/hostfile:ro" \
      -e DISTNET_SSH_KEY=/etc/distnet/key -v "$local_dir/coordinator_key:/etc/distnet/key:ro" \
      -e DISTNET_KNOWN_HOSTS=/etc/distnet/known_hosts -v "$local_dir/$2:/etc/distnet/known_hosts:ro" \
      -e DISTNET_SSH_PORT=2222 -e DISTNET_IFACE=eth0 -e DISTNET_WAIT_TIMEOUT=60 \
      -e TRAIN_ARGS="--epochs 1 --max-steps 30" "$IMAGE" coordinator >"$1" 2>&1
    UP_RC=$?
    set -e
  }
  hosts_job "$LOGDIR/hosts.log" known_hosts
  grep -E "final test accuracy|resumed|error" "$LOGDIR/hosts.log" || true
  [ "$UP_RC" = 0 ] || { tail -30 "$LOGDIR/hosts.log" >&2; fail "the separate-hosts job exited with $UP_RC"; }
  grep -q "after 30 steps" "$LOGDIR/hosts.log" || fail "the separate-hosts job did not train 30 steps"
  # sshd listens on eth0's address only (/proc/net/tcp: local address of the LISTEN sockets on 2222)
  listening=$(docker exec $PROJECT-node1 awk '$4 == "0A" && $2 ~ /:08AE$/ {print $2}' /proc/net/tcp)
  [ -n "$listening" ] && ! grep -q "^00000000:" <<<"$listening" || fail "worker sshd listens on $listening, not eth0 only"
  say "separate hosts: job exit 0 (strict host keys from a persistent known_hosts; sshd bound to eth0: $listening)"
  hosts_job "$LOGDIR/hosts-wrong.log" wrong_known_hosts
  [ "$UP_RC" != 0 ] || fail "the job ran although known_hosts holds the wrong host keys"
  grep -qiE "host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED" "$LOGDIR/hosts-wrong.log" \
    || { tail -20 "$LOGDIR/hosts-wrong.log" >&2; fail "the wrong-key run failed, but not on the host key"; }
  say "separate hosts: with the workers' keys swapped in known_hosts the job is refused (exit $UP_RC)"
  hosts_cleanup
fi

say "OK (total $(( $(date +%s) - T0 ))s)"
}

main "$@"; exit  # on one line: bash reads no further, even if the file changed meanwhile
