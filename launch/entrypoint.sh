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
# Keys are made when a container starts and never leave it except as public keys. The
# private ones live on tmpfs mounts (docker-compose.yml): the coordinator's client key in
# /home/distnet/.ssh, a worker's host key in /run/distnet; gone when the container stops,
# never in its writable layer or a `docker commit`. Root never writes into a directory that
# distnet owns: everything there (keys, ssh config, known_hosts, hostfile) is written by
# distnet itself, so a symlink planted by an earlier job cannot make root overwrite a file.
# Settings (environment; docker-compose.yml passes them through):
#   DISTNET_WORKERS          worker nodes the coordinator waits for (2)
#   DISTNET_PROCS_PER_NODE   MPI processes per node (1)
#   TRAIN_ARGS               arguments of python -m distnet.train (shell-quoted words)
#   DISTNET_MAX_RESTARTS     the launcher's --max-restarts (0; with DISTNET_ELASTIC=1 the
#                            launcher's own default, 10)
#   DISTNET_ELASTIC          1: elastic continuation (python -m distnet.launch --elastic): when
#                            a node is lost the job restarts with --resume on the nodes that
#                            still answer `ssh NODE true` (0 or unset: the job ends)
#   DISTNET_MIN_NODES        with DISTNET_ELASTIC=1: give up below this many nodes (1)
#   DISTNET_THREADS          BLAS threads per rank (unset: distnet's default, 1)
#   DISTNET_DATA_DIR         checkpoints and metrics go here (/data, the coordinator's volume)
#   DISTNET_RENDEZVOUS       public keys: hostkeys/ (the workers write it) and
#                            client/authorized_keys (the coordinator writes it) (/rendezvous)
#   DISTNET_WORKER_SERVICE   DNS name of the workers (worker)
#   DISTNET_SSH_PORT         the workers' sshd port, 1-65535 (22)
#   DISTNET_HOSTFILE         (real hosts) a hostfile to use instead of DNS discovery
#   DISTNET_HOSTKEY_CHECK    yes (strict: host keys from the rendezvous directory or from
#                            DISTNET_KNOWN_HOSTS) or accept-new (trust on first use); any
#                            other value is an error
#   DISTNET_KNOWN_HOSTS      (real hosts, coordinator) a known_hosts file kept across runs
#                            (read-only with yes; writable by uid 1000 with accept-new)
#   DISTNET_HOST_KEY         (real hosts, worker) a persistent ssh host private key
#   DISTNET_SSH_KEY          (real hosts) a private key file to use instead of a fresh one
#   DISTNET_IFACE            (real hosts) the cluster's network interface: sshd listens
#                            only there; the ranks' MPI sockets (FI_TCP_IFACE) and mpiexec use it
#   DISTNET_WAIT_TIMEOUT     seconds to wait for the workers (180)
#   DISTNET_LINK_RATE        (slow-network runs) shape this node's outgoing traffic to this
#                            rate with tc, e.g. 1gbit, 100mbit (unset: not shaped)
#   DISTNET_LINK_DELAY       (slow-network runs) add this one-way delay to it, e.g. 0.5ms (netem)
#                            Both need NET_ADMIN (launch/docker-compose.slow.yml adds it); they
#                            are applied as root before sshd or the job starts. See limit_links.
set -euo pipefail

role=${1:-coordinator}
RDV=${DISTNET_RENDEZVOUS:-/rendezvous}
AUTH_KEYS=$RDV/client/authorized_keys   # written by the coordinator, read-only on workers
SSH_PORT=${DISTNET_SSH_PORT:-22}
CHECK=${DISTNET_HOSTKEY_CHECK:-yes}
RUNAS=distnet
HOME_DIR=/home/distnet
HERE=/opt/distnet-launch
PY=/opt/venv/bin/python

log() { echo "[distnet $role $(hostname)] $*" >&2; }
bad_setting() { echo "distnet: error: $1" >&2; exit 2; }
as_user() { setpriv --reuid="$RUNAS" --regid="$RUNAS" --init-groups env HOME="$HOME_DIR" USER="$RUNAS" LOGNAME="$RUNAS" "$@"; }
# stdin into FILE, written by distnet with mode 600 (FILE is in a directory distnet owns)
write_as_user() { as_user sh -c 'umask 077 && rm -f "$1" && cat >"$1"' sh "$1"; }

# The settings, checked before anything is done: a typo is an error, never a weaker mode.
check_settings() {
  [[ $SSH_PORT =~ ^[1-9][0-9]{0,4}$ ]] && [ "$SSH_PORT" -le 65535 ] \
    || bad_setting "DISTNET_SSH_PORT: must be a port number from 1 to 65535, got '$SSH_PORT'"
  case "$CHECK" in
    yes|accept-new) ;;
    *) bad_setting "DISTNET_HOSTKEY_CHECK: must be 'yes' (strict) or 'accept-new' (trust on first use), got '$CHECK'" ;;
  esac
  case "${DISTNET_ELASTIC:-0}" in
    0|1) ;;
    *) bad_setting "DISTNET_ELASTIC: must be 1 (continue on the surviving nodes) or 0, got '$DISTNET_ELASTIC'" ;;
  esac
  [[ ${DISTNET_MIN_NODES:-1} =~ ^[1-9][0-9]*$ ]] \
    || bad_setting "DISTNET_MIN_NODES: must be a whole number >= 1, got '$DISTNET_MIN_NODES'"
  [[ ${DISTNET_MAX_RESTARTS:-0} =~ ^[0-9]+$ ]] \
    || bad_setting "DISTNET_MAX_RESTARTS: must be a whole number >= 0, got '$DISTNET_MAX_RESTARTS'"
  if [ -n "${DISTNET_IFACE:-}" ] && ! [[ $DISTNET_IFACE =~ ^[A-Za-z0-9_.:-]{1,15}$ ]]; then
    bad_setting "DISTNET_IFACE: not a network interface name: '$DISTNET_IFACE'"
  fi
  local rate=${DISTNET_LINK_RATE:-} delay=${DISTNET_LINK_DELAY:-}
  [ -z "$rate" ] || [[ $rate =~ ^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit)$ ]] \
    || bad_setting "DISTNET_LINK_RATE: a rate in tc's units (e.g. 1gbit, 100mbit, 800kbit), got '$rate'"
  [ -z "$delay" ] || [[ $delay =~ ^[0-9]+(\.[0-9]+)?(us|ms)$ ]] \
    || bad_setting "DISTNET_LINK_DELAY: a one-way delay in us or ms (e.g. 0.5ms), got '$delay'"
  local var
  for var in DISTNET_KNOWN_HOSTS DISTNET_HOST_KEY DISTNET_SSH_KEY DISTNET_HOSTFILE; do
    if [ -n "${!var:-}" ] && [ ! -f "${!var}" ]; then
      bad_setting "$var: ${!var}: no such file (mount it into the container)"
    fi
  done
}

# A private key belongs on a tmpfs (docker-compose.yml mounts one); say so when it is not.
warn_unless_tmpfs() {
  [ "$(stat -f -c %T "$1" 2>/dev/null)" = tmpfs ] \
    || log "warning: $1 is not a tmpfs: its private key stays in the container's writable layer (mount one: --tmpfs $1)"
}

# Shape this node's egress (DISTNET_LINK_RATE, DISTNET_LINK_DELAY) on the interface of its
# default route. Every node does it, so each direction of every link is limited once. A rate
# alone: tbf, whose bucket holds 1 ms of traffic but at least 64 KiB (one GSO packet) and
# whose queue holds 50 ms. A delay: netem (delay, and the rate if one is given). netem is a
# kernel module some kernels lack (these build machines: CONFIG_NET_SCH_NETEM unset): then a
# delay is an error rather than a quietly faster link. launch/linkcheck.py measures the result.
limit_links() {   # (the values were checked by check_settings)
  local rate=${DISTNET_LINK_RATE:-} delay=${DISTNET_LINK_DELAY:-} dev
  [ -n "$rate$delay" ] || return 0
  command -v tc >/dev/null || { log "DISTNET_LINK_*: tc is not installed (iproute2)"; exit 1; }
  dev=$(ip -o route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
  [ -n "$dev" ] || dev=eth0
  local err
  if [ -n "$delay" ]; then
    err=$(tc qdisc replace dev "$dev" root netem delay "$delay" ${rate:+rate "$rate"} limit 10000 2>&1) \
      || { log "DISTNET_LINK_DELAY: tc netem failed: $err (no NET_ADMIN: use launch/docker-compose.slow.yml; 'unknown qdisc': this kernel has no sch_netem, so no delay can be added)"; exit 1; }
  else
    local burst
    burst=$(awk -v r="$rate" 'BEGIN { n = r + 0; u = substr(r, match(r, /[a-z]+$/));
      b = n * (u == "gbit" ? 1e9 : u == "mbit" ? 1e6 : u == "kbit" ? 1e3 : 1) / 8 / 1000;
      printf "%d\n", (b < 65536 ? 65536 : b) }')
    err=$(tc qdisc replace dev "$dev" root tbf rate "$rate" burst "$burst" latency 50ms 2>&1) \
      || { log "DISTNET_LINK_RATE: tc tbf failed: $err (no NET_ADMIN? use launch/docker-compose.slow.yml)"; exit 1; }
  fi
  log "link limited: $(tc qdisc show dev "$dev" | head -n1)"
}

worker() {
  [ "$(id -u)" = 0 ] || { log "the worker role runs sshd and must start as root"; exit 1; }
  limit_links
  local keydir=/run/distnet listen=""
  mkdir -p /run/sshd "$keydir" "$RDV/hostkeys"
  chmod 700 "$keydir"
  warn_unless_tmpfs "$keydir"
  rm -f "$keydir/ssh_host_ed25519_key" "$keydir/ssh_host_ed25519_key.pub"
  if [ -n "${DISTNET_HOST_KEY:-}" ]; then   # a persistent host key (separate hosts)
    install -m 600 "$DISTNET_HOST_KEY" "$keydir/ssh_host_ed25519_key"
    ssh-keygen -y -f "$keydir/ssh_host_ed25519_key" >"$keydir/ssh_host_ed25519_key.pub"
  else
    ssh-keygen -q -t ed25519 -N '' -C "distnet-worker@$(hostname)" -f "$keydir/ssh_host_ed25519_key"
  fi
  if [ -n "${DISTNET_IFACE:-}" ]; then
    listen=$("$PY" "$HERE/rendezvous.py" iface-address "$DISTNET_IFACE") \
      || bad_setting "DISTNET_IFACE: no IPv4 address on network interface '$DISTNET_IFACE'"
  fi
  {
    echo "Port $SSH_PORT"
    [ -z "$listen" ] || echo "ListenAddress $listen"
    cat <<SSHD
HostKey $keydir/ssh_host_ed25519_key
AuthorizedKeysFile $AUTH_KEYS
AllowUsers $RUNAS
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
DisableForwarding yes
PermitTunnel no
PermitUserRC no
PermitUserEnvironment no
LoginGraceTime 15
MaxAuthTries 3
PrintMotd no
PidFile $keydir/sshd.pid
LogLevel ${DISTNET_SSHD_LOGLEVEL:-ERROR}
ClientAliveInterval 5
ClientAliveCountMax 3
MaxStartups 100:30:200
SSHD
  } >"$keydir/sshd_config"
  /usr/sbin/sshd -t -f "$keydir/sshd_config"
  "$PY" "$HERE/rendezvous.py" register --keydir "$RDV/hostkeys" --pubkey "$keydir/ssh_host_ed25519_key.pub"
  log "sshd on ${listen:-every address}, port $SSH_PORT; waiting for the coordinator's mpiexec"
  /usr/sbin/sshd -D -e -f "$keydir/sshd_config" &
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
  limit_links
  local data=${DISTNET_DATA_DIR:-/data} ppn=${DISTNET_PROCS_PER_NODE:-1} workers=${DISTNET_WORKERS:-2}
  local ssh_dir=$HOME_DIR/.ssh uid
  uid=$(id -u "$RUNAS")
  mkdir -p "$RDV/client" "$data"
  chmod 755 "$RDV/client"  # sshd's StrictModes: no group/world-writable directory above authorized_keys
  if [ "$(stat -c %u "$data")" != "$uid" ]; then
    chown -h "$RUNAS:$RUNAS" "$data" 2>/dev/null || log "warning: cannot chown $data to $RUNAS; it must be writable by uid $uid"
  fi

  # distnet's directory for its key pair, ssh config, known_hosts and the hostfile, made
  # and filled by distnet (a tmpfs mount point in docker-compose.yml; emptied here).
  as_user sh -c 'mkdir -p "$1" && find "$1" -mindepth 1 -delete && chmod 700 "$1"' sh "$ssh_dir"
  warn_unless_tmpfs "$ssh_dir"
  if [ -n "${DISTNET_SSH_KEY:-}" ]; then
    write_as_user "$ssh_dir/id_ed25519" <"$DISTNET_SSH_KEY"   # root reads the operator's file
    as_user sh -c 'ssh-keygen -y -f "$1/id_ed25519" >"$1/id_ed25519.pub"' sh "$ssh_dir"
  else
    as_user ssh-keygen -q -t ed25519 -N '' -C "distnet-coordinator@$(hostname)" -f "$ssh_dir/id_ed25519"
  fi
  # Only the public half is shared, with `restrict` (no forwarding, pty, X11 or user rc for
  # this key, whatever sshd allows), in the root-owned rendezvous directory.
  local pub tmp
  pub=$(as_user cat "$ssh_dir/id_ed25519.pub")
  [[ $pub =~ ^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521))\ [A-Za-z0-9+/]+=*(\ [^[:cntrl:]]*)?$ ]] \
    || { log "the public key is not one ssh key line"; exit 1; }
  tmp=$(mktemp "$RDV/client/.authorized_keys.XXXXXX")
  printf 'restrict %s\n' "$pub" >"$tmp"
  chmod 644 "$tmp"
  mv -f "$tmp" "$AUTH_KEYS"

  local known=${DISTNET_KNOWN_HOSTS:-$ssh_dir/known_hosts}
  if [ -n "${DISTNET_KNOWN_HOSTS:-}" ]; then
    as_user test -r "$known" || bad_setting "DISTNET_KNOWN_HOSTS: $known: not readable by uid $uid"
    [ "$CHECK" = yes ] || as_user test -w "$known" \
      || bad_setting "DISTNET_KNOWN_HOSTS: $known: DISTNET_HOSTKEY_CHECK=accept-new records new keys there, but uid $uid cannot write it"
  fi
  write_as_user "$ssh_dir/config" <<SSHCONFIG
Host *
  User $RUNAS
  Port $SSH_PORT
  IdentityFile $ssh_dir/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $known
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking $CHECK
  BatchMode yes
  LogLevel ERROR
  ConnectTimeout 10
  ServerAliveInterval 5
  ServerAliveCountMax 3
SSHCONFIG

  local rdv_args=(--keydir "$RDV/hostkeys" --port "$SSH_PORT" --ppn "$ppn"
                  --hostfile "$ssh_dir/hostfile" --timeout "${DISTNET_WAIT_TIMEOUT:-180}")
  [ -n "${DISTNET_KNOWN_HOSTS:-}" ] || rdv_args+=(--known-hosts "$known")
  if [ -n "${DISTNET_HOSTFILE:-}" ]; then
    rdv_args+=(--hostfile-in "$DISTNET_HOSTFILE")
  else
    rdv_args+=(--service "${DISTNET_WORKER_SERVICE:-worker}" --expect "$workers")
  fi
  [ "$CHECK" = yes ] || rdv_args+=(--trust-on-first-use)
  local nprocs me
  nprocs=$(cd "$HOME_DIR" && as_user "$PY" "$HERE/rendezvous.py" coordinator "${rdv_args[@]}")
  me=${DISTNET_ADVERTISE_ADDR:-$(as_user head -n1 "$ssh_dir/hostfile" | cut -d: -f1)}

  # BLAS threads per rank: distnet's default is 1 (more cores: more processes per node);
  # DISTNET_THREADS=N sets N on every node (mpiexec passes its environment to every rank).
  if [ -n "${DISTNET_THREADS:-}" ]; then
    export OPENBLAS_NUM_THREADS=$DISTNET_THREADS OMP_NUM_THREADS=$DISTNET_THREADS MKL_NUM_THREADS=$DISTNET_THREADS
  fi
  # The cluster interface: the ranks' libfabric sockets bind to it, mpiexec uses it.
  local iface_args=()
  if [ -n "${DISTNET_IFACE:-}" ]; then
    export FI_TCP_IFACE=${FI_TCP_IFACE:-$DISTNET_IFACE}
    iface_args=(--mpi-arg=-iface "--mpi-arg=$DISTNET_IFACE")
  fi

  # TRAIN_ARGS is split like a shell would (quotes allowed), without globbing or expansion.
  "$PY" -c 'import os, shlex; shlex.split(os.environ.get("TRAIN_ARGS", ""))' 2>/dev/null \
    || { log "TRAIN_ARGS is not valid shell quoting: ${TRAIN_ARGS:-}"; exit 2; }
  local train_args=()
  mapfile -d '' -t train_args < <("$PY" -c 'import os, shlex, sys; sys.stdout.write("".join(a + "\0" for a in shlex.split(os.environ.get("TRAIN_ARGS", ""))))')
  # Elastic: no -n (the ranks are the slots of the nodes that answer before each start),
  # restarts with --resume on the survivors when a node is lost (distnet/elastic.py).
  # Before each start `rendezvous.py refresh` rewrites the hostfile and known_hosts from the
  # workers there now (the same arguments as above, no waiting), so a worker started again
  # (it publishes its new host key) or added (--scale worker=N) is used at the next restart.
  local scale=(-n "$nprocs" --max-restarts "${DISTNET_MAX_RESTARTS:-0}")
  if [ "${DISTNET_ELASTIC:-0}" = 1 ]; then
    local refresh_args=("$PY" "$HERE/rendezvous.py" refresh --self-address "$me") arg skip=0
    for arg in "${rdv_args[@]}"; do   # the coordinator's arguments but --expect N, --timeout S
      if [ $skip = 1 ]; then skip=0; continue; fi
      case "$arg" in --expect|--timeout) skip=1; continue ;; esac
      refresh_args+=("$arg")
    done
    scale=(--elastic --min-nodes "${DISTNET_MIN_NODES:-1}" --restart-delay 1
           --refresh-command "$(printf '%q ' "${refresh_args[@]}")"
           ${DISTNET_MAX_RESTARTS:+--max-restarts "$DISTNET_MAX_RESTARTS"})
  fi
  local cmd=("$PY" -m distnet.launch "${scale[@]}" --hostfile "$ssh_dir/hostfile"
             --mpi-arg=-launcher --mpi-arg=ssh --mpi-arg=-localhost "--mpi-arg=$me"
             ${iface_args[@]+"${iface_args[@]}"}
             --
             --checkpoint-dir "$data/checkpoints" --metrics "$data/metrics.jsonl" --resume --no-progress
             --checkpoint-every 100 --timeout 60
             ${train_args[@]+"${train_args[@]}"})
  log "running as $RUNAS: ${cmd[*]}"
  cd "$HOME_DIR"
  exec setpriv --reuid="$RUNAS" --regid="$RUNAS" --init-groups env HOME="$HOME_DIR" USER="$RUNAS" LOGNAME="$RUNAS" "${cmd[@]}"
}

case "$role" in
  worker) check_settings; worker ;;
  coordinator) check_settings; coordinator ;;
  *) exec "$@" ;;
esac
