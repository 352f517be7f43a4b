#!/usr/bin/env bash
# The slow-network grid (README.md, "Slow networks"): plain, --overlap, --compress fp16 and both,
# per model, over the 3-node compose cluster with its links at full speed, 1 Gbit/s and
# 100 Mbit/s, and prints one table (and the link check of each speed). Run from anywhere:
#
#   launch/slownet-bench.sh                       # cnn2 (MNIST) and cifar-resnet (CIFAR-10 subset)
#   SLOWNET_MODELS=cnn2 SLOWNET_RATES="full 100mbit" launch/slownet-bench.sh
#
# How the links are limited: launch/docker-compose.slow.yml on top of docker-compose.yml (only
# those containers get NET_ADMIN; the base file's cap_drop ALL / no-new-privileges stay), and
# launch/entrypoint.sh's limit_links shapes each node's egress with tc as root before sshd or
# the job starts: DISTNET_LINK_RATE=100mbit (tbf), DISTNET_LINK_DELAY=0.5ms (netem; one way,
# per node, so a round trip gets it twice). This machine's kernel has no sch_netem, so here
# SLOWNET_DELAY is left empty and the links get their rate only (the script says so).
# launch/linkcheck.py measures each speed between two workers: TCP throughput and the 1-byte
# round trip. Scaling model users: those two lines are beta and alpha of the links.
#
# Per configuration: one job of `distnet.train` on 3 nodes x 1 rank (workers stay up for a
# whole link speed; one coordinator per job, `docker-compose run`). Figures come from the
# job's metrics (train events, every SLOWNET_LOG_EVERY steps): images/s is the median over the
# windows after the first (warm-up); ms/step = global batch / images/s. Two counts that do not
# depend on the machine's load: the bytes a worker sent per step (the two workers' eth0 counters
# over the job / steps / 2; includes start-up and the final evaluation) and worker 1's TCP
# retransmissions. Before the jobs of each speed, a probe job (benchmarks/slownet_probe.py,
# SLOWNET_PROBE=0 skips it) times the reduction alone, float32 allreduce vs fp16, interleaved
# round by round: the "time per step in the allreduce", which survives the load far better.
#
# Environment: SLOWNET_MODELS (cnn2 cifar-resnet), SLOWNET_RATES (full 1gbit 100mbit),
# SLOWNET_DELAY (empty; e.g. 0.5ms where netem exists), SLOWNET_CONFIGS (plain overlap fp16
# overlap+fp16; empty: the link checks and probes only), SLOWNET_STEPS_<model> / SLOWNET_LOG_<model> (cnn2: 40/10, cifar-resnet: 8/2,
# cifar-cnn: 16/4), SLOWNET_BATCH (128), SLOWNET_JSON (also write the rows there).
# Uses its own compose project (distnet-slownet) and image tag (distnet-node:slownet), removes
# the project (containers, network, volumes) at the end; never touches other images or projects.
set -euo pipefail

main() {
cd "$(dirname "$0")/.."
ROOT=$PWD
PROJECT=distnet-slownet
export DISTNET_IMAGE=distnet-node:slownet
MODELS=${SLOWNET_MODELS:-cnn2 cifar-resnet}
RATES=${SLOWNET_RATES:-full 1gbit 100mbit}
DELAY=${SLOWNET_DELAY:-}
CONFIGS=${SLOWNET_CONFIGS-plain overlap fp16 overlap+fp16}
BATCH=${SLOWNET_BATCH:-128}
WORK=$(mktemp -d /tmp/slownet-bench.XXXXXX)
T0=$(date +%s)
say() { echo "[slownet +$(( $(date +%s) - T0 ))s] $*" >&2; }
if command -v docker-compose >/dev/null; then COMPOSE=(docker-compose); else COMPOSE=(docker compose); fi
dc() { "${COMPOSE[@]}" -p "$PROJECT" -f "$ROOT/docker-compose.yml" -f "$ROOT/launch/docker-compose.slow.yml" "$@"; }
# a Python with numpy for the data files and the table (this checkout's venv if there is one)
PY=${SLOWNET_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
trap 'dc down -v >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

# The data as npz files mounted at /datasets, with small test splits (the final evaluation is
# not what is timed): MNIST's first 8,000 training images (the package's copy: 7,900 / 100),
# CIFAR-10's exact first 4,000 (../shared/data: 3,900 / 100); no JPEG decoding in the jobs.
mkdir -p "$WORK/datasets"
export DISTNET_DATASETS=$WORK/datasets
PYTHONPATH=$ROOT "$PY" - "$WORK/datasets/mnist8000.npz" <<'PY'
import sys, numpy as np
from distnet.data import load_dataset
d = load_dataset("mnist", "train")
x, y = np.asarray(d.images[:8000]), np.asarray(d.labels[:8000]).astype(np.int64)
np.savez(sys.argv[1], x_train=x[:7900], y_train=y[:7900], x_test=x[7900:], y_test=y[7900:])
PY
if [[ " $MODELS " == *" cifar-"* ]]; then
  src=$ROOT/../shared/data/cifar10/cifar10_train_first4000_exact.npz
  [ -f "$src" ] || src=/work/shared/data/cifar10/cifar10_train_first4000_exact.npz
  "$PY" - "$src" "$WORK/datasets/cifar4000.npz" <<'PY'
import sys, numpy as np
z = np.load(sys.argv[1], allow_pickle=False)
x = z["x_train_first4000"].transpose(0, 3, 1, 2)
y = z["y_train_first4000"].astype(np.int64)
np.savez(sys.argv[2], x_train=x[:3900], y_train=y[:3900], x_test=x[3900:], y_test=y[3900:])
PY
fi
cp "$ROOT/benchmarks/slownet_probe.py" "$WORK/datasets/"
chmod -R a+rX "$WORK"

data_args() {
  case "$1" in
    cifar-*) echo "--dataset npz:/datasets/cifar4000.npz --augment-shift 0" ;;
    *) echo "--dataset npz:/datasets/mnist8000.npz --augment-shift 0" ;;
  esac
}
steps_of() {
  local var="SLOWNET_STEPS_${1//-/_}" def
  case "$1" in cnn2) def=40 ;; cifar-resnet) def=8 ;; *) def=16 ;; esac
  echo "${!var:-$def}"
}
log_of() {
  local var="SLOWNET_LOG_${1//-/_}" def
  case "$1" in cnn2) def=10 ;; cifar-resnet) def=2 ;; *) def=4 ;; esac
  echo "${!var:-$def}"
}
# bytes a node sent (all of its traffic: MPI, ssh, the start-up broadcast and the final evaluation)
tx_bytes() { docker exec "$1" cat /sys/class/net/eth0/statistics/tx_bytes; }
# TCP segments retransmitted by a node (its network namespace's counter): drops at the shaper
tcp_retransmits() {
  docker exec "$1" awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "RetransSegs") c = i; h = 1 } else print $c }' /proc/net/snmp
}
flags_of() {
  case "$1" in
    plain) echo "" ;; overlap) echo "--overlap" ;; fp16) echo "--compress fp16" ;;
    overlap+fp16) echo "--overlap --compress fp16" ;;
    *) echo "slownet-bench: unknown configuration $1" >&2; exit 2 ;;
  esac
}

say "building $DISTNET_IMAGE"
dc build >"$WORK/build.log" 2>&1 || { tail -20 "$WORK/build.log" >&2; exit 1; }
: >"$WORK/rows.jsonl"
for rate in $RATES; do
  link_rate=$rate; [ "$rate" = full ] && link_rate=""
  say "link: ${rate}${DELAY:+ + $DELAY one way}: starting the workers"
  dc down -v >/dev/null 2>&1 || true
  DISTNET_LINK_RATE=$link_rate DISTNET_LINK_DELAY=$DELAY dc up -d worker >"$WORK/up.log" 2>&1 \
    || { cat "$WORK/up.log" >&2; exit 1; }
  sleep 3
  w1=${PROJECT}_worker_1 w2=${PROJECT}_worker_2
  for c in "$w1" "$w2"; do docker exec -i "$c" sh -c 'cat > /tmp/linkcheck.py' <"$ROOT/launch/linkcheck.py"; done
  docker exec -d "$w2" python /tmp/linkcheck.py serve
  sleep 1
  ip2=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$w2")
  link=$(docker exec "$w1" python /tmp/linkcheck.py measure "$ip2" --seconds 3)
  echo "$rate: $link" | tee -a "$WORK/links.txt" >&2
  if [ "${SLOWNET_PROBE:-1}" = 1 ]; then
    # the reduction alone, plain float32 vs fp16, interleaved (benchmarks/slownet_probe.py)
    say "probe: float32 allreduce vs fp16 at $rate"
    if ! DISTNET_LINK_RATE=$link_rate DISTNET_LINK_DELAY=$DELAY TRAIN_ARGS="--model /datasets/slownet_probe.py:model \
--dataset npz:/datasets/mnist8000.npz --max-steps 1 --eval-every 0 --timeout 600 --checkpoint-dir /data/probe-$rate" \
         dc run --rm coordinator >"$WORK/probe-$rate.log" 2>&1; then
      tail -20 "$WORK/probe-$rate.log" >&2; exit 1
    fi
    grep -a '^slownet-probe: ' "$WORK/probe-$rate.log" | sed "s/^slownet-probe: {/{\"link\": \"$rate\", /" \
      | tee -a "$WORK/probe.jsonl" >&2
  fi
  for model in $MODELS; do
    for config in $CONFIGS; do
      job="${model}-${rate}-${config}"
      args="--model $model $(data_args "$model") --batch-size $BATCH --max-steps $(steps_of "$model") \
--log-every $(log_of "$model") --eval-every 0 --timeout 600 --checkpoint-dir /data/$job --metrics /data/$job.jsonl $(flags_of "$config")"
      say "job $job: $args"
      retrans0=$(tcp_retransmits "$w1") tx0=$(( $(tx_bytes "$w1") + $(tx_bytes "$w2") ))
      if ! DISTNET_LINK_RATE=$link_rate DISTNET_LINK_DELAY=$DELAY TRAIN_ARGS="$args" \
           dc run --rm coordinator >"$WORK/$job.log" 2>&1; then
        tail -20 "$WORK/$job.log" >&2; exit 1
      fi
      docker run --rm -v "${PROJECT}_runs:/data:ro" --entrypoint cat "$DISTNET_IMAGE" "/data/$job.jsonl" \
        >"$WORK/$job.jsonl"
      retrans=$(( $(tcp_retransmits "$w1") - retrans0 )) tx=$(( ($(tx_bytes "$w1") + $(tx_bytes "$w2") - tx0) / 2 ))
      "$PY" - "$WORK/$job.jsonl" "$model" "$rate" "$config" "$BATCH" "$retrans" "$tx" "$(steps_of "$model")" \
        >>"$WORK/rows.jsonl" <<'PY'
import json, statistics, sys
path, model, rate, config, batch, retrans, tx, steps = sys.argv[1:]
rates = [r["images_per_sec"] for r in map(json.loads, open(path)) if r.get("event") == "train"]
used = rates[1:] if len(rates) > 1 else rates
ips = statistics.median(used)
print(json.dumps({"model": model, "link": rate, "config": config, "images_per_s": round(ips, 1),
                  "ms_per_step": round(int(batch) / ips * 1e3, 1),
                  "spread": [round(min(used), 1), round(max(used), 1)], "windows": len(used),
                  "worker_1_tcp_retransmits": int(retrans),
                  "worker_sent_mb_per_step": round(int(tx) / int(steps) / 1e6, 3)}))
PY
      tail -n1 "$WORK/rows.jsonl" >&2
    done
  done
done
dc down -v >/dev/null 2>&1 || true

echo
echo "links (launch/linkcheck.py between two workers; delay: ${DELAY:-none added}):"
cat "$WORK/links.txt"
echo
[ ! -s "$WORK/rows.jsonl" ] || "$PY" - "$WORK/rows.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
plain = {(r["model"], r["link"]): r["images_per_s"] for r in rows if r["config"] == "plain"}
print(f"| model | link | config | images/s | ms/step | vs plain | min-max images/s | MB sent/step (mean of 2 workers) | TCP retransmits (worker 1) |")
print(f"|---|---|---|---:|---:|---:|---|---:|---:|")
for r in rows:
    base = plain.get((r["model"], r["link"]))
    rel = f"{r['images_per_s'] / base:.2f}x" if base else "-"
    print(f"| {r['model']} | {r['link']} | {r['config']} | {r['images_per_s']:.0f} | {r['ms_per_step']:.0f} | "
          f"{rel} | {r['spread'][0]:.0f}-{r['spread'][1]:.0f} | {r['worker_sent_mb_per_step']:.3f} | "
          f"{r['worker_1_tcp_retransmits']} |")
PY
if [ -s "$WORK/probe.jsonl" ]; then
  echo
  "$PY" - "$WORK/probe.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
base = {(r["link"], r["size_of"]): r["median_ms"] for r in rows if r["variant"] == "float32"}
print("| link | gradient of | values | reduction | median ms (min-max) | fp16 / float32 |")
print("|---|---|---:|---|---|---:|")
for r in rows:
    ratio = r["median_ms"] / base[(r["link"], r["size_of"])]
    print(f"| {r['link']} | {r['size_of']} | {r['values']:,} | {r['variant']} | {r['median_ms']:.1f} "
          f"({r['min_ms']:.1f}-{r['max_ms']:.1f}) | {ratio:.2f} |")
PY
fi
[ -z "${SLOWNET_JSON:-}" ] || cat "$WORK/rows.jsonl" "$WORK/probe.jsonl" >"$SLOWNET_JSON" 2>/dev/null || true
say "done"
}

main "$@"
