#!/usr/bin/env bash
# Calibrate the scaling model's links between containers: alpha, beta, gamma of the compose
# bridge at full speed and shaped to 1 Gbit/s and 100 Mbit/s (tc tbf on each node's egress, as
# launch/docker-compose.slow.yml does), measured by benchmarks/calibrate_links.py under MPICH
# (ch4:ofi, libfabric tcp, the image's settings) across 2 and 3 containers.
#
#   bash benchmarks/calibrate_containers.sh [IMAGE]     (default distnet-node:latest; needs tc)
#
# It starts its own throwaway containers (docker project label distnet-scaling, network
# distnet-scaling-net, root inside, NET_ADMIN for tc only, an ssh key made for this run and
# never kept), writes benchmarks/results/calibration.json (merged) and removes only what it
# started. The training cluster itself is docker-compose.yml; this is a measurement rig.
set -euo pipefail
IMAGE=${1:-distnet-node:latest}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${CALIBRATION_OUT:-$HERE/results/calibration.json}
NET=distnet-scaling-net
NODES=(distnet-scaling-n0 distnet-scaling-n1 distnet-scaling-n2)
RATES=${RATES:-"bridge 1gbit 100mbit"}
SCALE=${SCALE:-1}

cleanup() {
  for n in "${NODES[@]}"; do docker rm -f "$n" >/dev/null 2>&1 || true; done
  docker network rm "$NET" >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup
docker network create "$NET" >/dev/null
for n in "${NODES[@]}"; do
  docker run -d --name "$n" --hostname "$n" --network "$NET" --label project=distnet-scaling \
    --cap-add NET_ADMIN --shm-size 256m -v "$(dirname "$HERE"):/repo:ro" --entrypoint sleep "$IMAGE" infinity >/dev/null
done
# ssh between them as root, with a key made now (no password, no agent)
docker exec "${NODES[0]}" sh -c 'mkdir -p /root/.ssh && ssh-keygen -q -t ed25519 -N "" -f /root/.ssh/id_ed25519 &&
  printf "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n" > /root/.ssh/config'
pub=$(docker exec "${NODES[0]}" cat /root/.ssh/id_ed25519.pub)
for n in "${NODES[@]}"; do
  docker exec "$n" sh -c "mkdir -p /root/.ssh /run/sshd && echo '$pub' > /root/.ssh/authorized_keys &&
    chmod 700 /root/.ssh && ssh-keygen -A >/dev/null && /usr/sbin/sshd"
done

shape() {  # shape every node's egress to $1 (or clear it for 'bridge')
  for n in "${NODES[@]}"; do
    docker exec "$n" tc qdisc del dev eth0 root >/dev/null 2>&1 || true
    if [ "$1" != bridge ]; then
      # tbf as launch/entrypoint.sh (limit_links) sets it: 1 ms of traffic, >= 64 KiB, 50 ms queue
      local burst
      burst=$(python3 -c "import sys; r=sys.argv[1]; v=float(r[:-4])*{'k':1e3,'m':1e6,'g':1e9}[r[-4]]; print(max(65536,int(v/8/1000)))" "$1")
      docker exec "$n" tc qdisc replace dev eth0 root tbf rate "$1" burst "$burst" latency 50ms
    fi
  done
}

run() {  # run NAME RANKS
  local hosts
  hosts=$(IFS=,; echo "${NODES[*]:0:$2}")
  docker exec -e HOME=/root "${NODES[0]}" /opt/venv/bin/mpiexec -launcher ssh -hosts "$hosts" -n "$2" \
    /opt/venv/bin/python /repo/benchmarks/calibrate_links.py --link "$1" --out /tmp/calibration.json --scale "$SCALE" \
    --note "$2 containers on the 2-core host, MPICH ch4:ofi tcp, tc tbf ${1}; under load from other helpers"
  docker exec "${NODES[0]}" cat /tmp/calibration.json > "$OUT.part"
  python3 - "$OUT" "$OUT.part" <<'PY'
import json, os, sys
out, part = sys.argv[1], sys.argv[2]
doc = json.load(open(out)) if os.path.exists(out) else {"links": {}, "compute": {}}
new = json.load(open(part))
doc.setdefault("links", {}).update(new.get("links", {}))
tmp = out + ".tmp"
json.dump(doc, open(tmp, "w"), indent=1)
os.replace(tmp, out)
os.remove(part)
PY
}

for rate in $RATES; do
  shape "$rate"
  echo "== $rate, 2 containers"
  run "$rate" 2
  echo "== $rate, 3 containers (the allreduce check for p=3; alpha/beta kept from the 2-container fit)"
  run "$rate-p3" 3
done
