#!/bin/bash
# Entry point of the distnet node image (launch/Dockerfile).
#
#   entrypoint.sh worker        generate a fresh ssh host key, publish its public half in the
#                               rendezvous directory, run sshd in the foreground; the
#                               coordinator's mpiexec starts this node's ranks over ssh.
#   entrypoint.sh coordinator   generate a fresh client key pair, publish its public half as
#                               the workers' authorized_keys, wait for the workers (compose
#                               DNS), write the hostfile, then run, as user distnet,
#                                 python -m distnet.launch -n NODES*PPN --hostfile ... -- \
#                                   --checkpoint-dir $DATA/checkpoints --metrics $DATA/metrics.jsonl \
#                                   --resume --no-progress --checkpoint-every 100 --timeout 60 $TRAIN_ARGS
#                               (TRAIN_ARGS come last: a flag given there wins)
#                               and exit with its exit code (the job's).
#   entrypoint.sh CMD ...       run CMD (e.g. python -c ...).
#
# Keys are made when a container starts and never leave it except as public keys: the
# coordinator's private key stays in its home directory, the workers' host keys in /run.
# Settings (environment; docker-compose.yml passes them through):
#   DISTNET_WORKERS          worker nodes the coordinator waits for (2)
#   DISTNET_PROCS_PER_NODE   MPI processes per node (1)
#   TRAIN_ARGS               arguments of python -m distnet.train (shell-quoted words)
#   DISTNET_MAX_RESTARTS     the launcher's --max-restarts (0)
#   DISTNET_THREADS          BLAS threads per rank (unset: distnet's default, 1)
#   DISTNET_DATA_DIR         checkpoints and metrics go here (/data, the coordinator's volume)
#   DISTNET_RENDEZVOUS       directory shared by the nodes for public keys (/rendezvous)
#   DISTNET_WORKER_SERVICE   DNS name of the workers (worker)
#   DISTNET_SSH_PORT         the workers' sshd port (22)
#   DISTNET_HOSTFILE         (real hosts) a hostfile to use instead of DNS discovery
#   DISTNET_HOSTKEY_CHECK    yes (host keys from the rendezvous directory) or accept-new
#   DISTNET_SSH_KEY          (real hosts) a private key file to use instead of a fresh one
#   DISTNET_WAIT_TIMEOUT     seconds to wait for the workers (180)
set -euo pipefail

role=${1:-coordinator}
RDV=${DISTNET_RENDEZVOUS:-/rendezvous}
SSH_PORT=${DISTNET_SSH_PORT:-22}
RUNAS=distnet
HOME_DIR=/home/distnet
HERE=/opt/distnet-launch
PY=/opt/venv/bin/python

log() { echo "[distnet $role $(hostname)] $*" >&2; }
as_user() { setpriv --reuid="$RUNAS" --regid="$RUNAS" --init-groups env HOME="$HOME_DIR" USER="$RUNAS" LOGNAME="$RUNAS" "$@"; }

worker() {
  [ "$(id -u)" = 0 ] || { log "the worker role runs sshd and must start as root"; exit 1; }
  mkdir -p /run/sshd /run/distnet "$RDV/hostkeys"
  rm -f /run/distnet/ssh_host_ed25519_key /run/distnet/ssh_host_ed25519_key.pub
  ssh-keygen -q -t ed25519 -N '' -C "distnet-worker@$(hostname)" -f /run/distnet/ssh_host_ed25519_key
  cat >/run/distnet/sshd_config <<EOF
Port $SSH_PORT
HostKey /run/distnet/ssh_host_ed25519_key
AuthorizedKeysFile $RDV/authorized_keys
AllowUsers $RUNAS
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
PrintMotd no
PidFile /run/distnet/sshd.pid
LogLevel ${DISTNET_SSHD_LOGLEVEL:-ERROR}
ClientAliveInterval 5
ClientAliveCountMax 3
MaxStartups 100:30:200
EOF
  /usr/sbin/sshd -t -f /run/distnet/sshd_config
  "$PY" "$HERE/rendezvous.py" register --keydir "$RDV/hostkeys" --pubkey /run/distnet/ssh_host_ed25519_key.pub
  log "sshd on port $SSH_PORT; waiting for the coordinator's mpiexec"
  /usr/sbin/sshd -D -e -f /run/distnet/sshd_config &
  local sshd_pid=$!
  # Stopped (docker stop, compose's Ctrl-C or abort): the coordinator is stopped at the same
  # time and its job is finishing its step and checkpointing, which needs this node's ranks;
  # so wait for them to end before leaving (stopping the container kills them).
  trap 'stop_worker "$sshd_pid"' TERM INT
  local rc=0
  wait "$sshd_pid" || rc=$?
  exit "$rc"
}

stop_worker() {
  local waited=0 limit=${DISTNET_WORKER_STOP_WAIT:-25}
  while pgrep -u "$RUNAS" >/dev/null && [ "$waited" -lt "$limit" ]; do
    [ "$waited" -gt 0 ] || log "stopping: waiting up to ${limit}s for this node's ranks to finish"
    sleep 1; waited=$((waited + 1))
  done
  kill -TERM "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  exit 0
}

coordinator() {
  [ "$(id -u)" = 0 ] || { log "the coordinator role must start as root (it drops to $RUNAS for the job)"; exit 1; }
  local data=${DISTNET_DATA_DIR:-/data} ppn=${DISTNET_PROCS_PER_NODE:-1} workers=${DISTNET_WORKERS:-2}
  local check=${DISTNET_HOSTKEY_CHECK:-yes} ssh_dir=$HOME_DIR/.ssh
  mkdir -p "$RDV/hostkeys" "$data"
  chmod 755 "$RDV"  # sshd's StrictModes: no group/world-writable directory above authorized_keys
  chown "$RUNAS:$RUNAS" "$data" 2>/dev/null || log "warning: cannot chown $data to $RUNAS; it must be writable by uid $(id -u $RUNAS)"

  # A fresh client key pair (or the one given); only the public half is shared.
  rm -rf "$ssh_dir"
  install -d -m 700 -o "$RUNAS" -g "$RUNAS" "$ssh_dir"
  if [ -n "${DISTNET_SSH_KEY:-}" ]; then
    install -m 600 -o "$RUNAS" -g "$RUNAS" "$DISTNET_SSH_KEY" "$ssh_dir/id_ed25519"
    as_user ssh-keygen -y -f "$ssh_dir/id_ed25519" >"$ssh_dir/id_ed25519.pub"
  else
    as_user ssh-keygen -q -t ed25519 -N '' -C "distnet-coordinator@$(hostname)" -f "$ssh_dir/id_ed25519"
  fi
  install -m 644 "$ssh_dir/id_ed25519.pub" "$RDV/.authorized_keys.tmp"
  mv -f "$RDV/.authorized_keys.tmp" "$RDV/authorized_keys"
  cat >"$ssh_dir/config" <<EOF
Host *
  User $RUNAS
  Port $SSH_PORT
  IdentityFile $ssh_dir/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $ssh_dir/known_hosts
  StrictHostKeyChecking $check
  BatchMode yes
  LogLevel ERROR
  ConnectTimeout 10
  ServerAliveInterval 5
  ServerAliveCountMax 3
EOF
  chown "$RUNAS:$RUNAS" "$ssh_dir/config" "$ssh_dir/id_ed25519.pub"

  local rdv_args=(--keydir "$RDV/hostkeys" --port "$SSH_PORT" --ppn "$ppn"
                  --hostfile "$HOME_DIR/hostfile" --known-hosts "$ssh_dir/known_hosts"
                  --timeout "${DISTNET_WAIT_TIMEOUT:-180}")
  if [ -n "${DISTNET_HOSTFILE:-}" ]; then
    rdv_args+=(--hostfile-in "$DISTNET_HOSTFILE")
  else
    rdv_args+=(--service "${DISTNET_WORKER_SERVICE:-worker}" --expect "$workers")
  fi
  [ "$check" = yes ] || rdv_args+=(--trust-on-first-use)
  local nprocs
  nprocs=$("$PY" "$HERE/rendezvous.py" coordinator "${rdv_args[@]}")
  chown "$RUNAS:$RUNAS" "$HOME_DIR/hostfile" "$ssh_dir/known_hosts"
  local me
  me=${DISTNET_ADVERTISE_ADDR:-$(head -n1 "$HOME_DIR/hostfile" | cut -d: -f1)}

  # BLAS threads per rank: distnet's default is 1 (more cores: more processes per node);
  # DISTNET_THREADS=N sets N on every node (mpiexec passes its environment to every rank).
  if [ -n "${DISTNET_THREADS:-}" ]; then
    export OPENBLAS_NUM_THREADS=$DISTNET_THREADS OMP_NUM_THREADS=$DISTNET_THREADS MKL_NUM_THREADS=$DISTNET_THREADS
  fi

  # TRAIN_ARGS is split like a shell would (quotes allowed), without globbing or expansion.
  "$PY" -c 'import os, shlex; shlex.split(os.environ.get("TRAIN_ARGS", ""))' 2>/dev/null \
    || { log "TRAIN_ARGS is not valid shell quoting: ${TRAIN_ARGS:-}"; exit 2; }
  local train_args=()
  mapfile -d '' -t train_args < <("$PY" -c 'import os, shlex, sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(os.environ.get("TRAIN_ARGS", ""))))')
  local cmd=("$PY" -m distnet.launch -n "$nprocs" --hostfile "$HOME_DIR/hostfile"
             --max-restarts "${DISTNET_MAX_RESTARTS:-0}"
             --mpi-arg=-launcher --mpi-arg=ssh --mpi-arg=-localhost "--mpi-arg=$me"
             --
             --checkpoint-dir "$data/checkpoints" --metrics "$data/metrics.jsonl" --resume --no-progress
             --checkpoint-every 100 --timeout 60
             ${train_args[@]+"${train_args[@]}"})
  log "running as $RUNAS: ${cmd[*]}"
  cd "$HOME_DIR"
  exec setpriv --reuid="$RUNAS" --regid="$RUNAS" --init-groups env HOME="$HOME_DIR" USER="$RUNAS" LOGNAME="$RUNAS" "${cmd[@]}"
}

case "$role" in
  worker) worker ;;
  coordinator) coordinator ;;
  *) exec "$@" ;;
esac
