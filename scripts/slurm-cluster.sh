#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the tests and for trying sweeps on a laptop.
#
#   sudo scripts/slurm-cluster.sh install   # Debian/Ubuntu: slurm-wlm, slurmdbd, munge, mariadb-server
#   sudo scripts/slurm-cluster.sh start     # munged, MariaDB, slurmdbd, slurmctld, slurmd; waits for the node
#   sudo scripts/slurm-cluster.sh stop      # cancels the jobs, then stops everything `start` started
#
# No systemd needed: every daemon is started by hand, with its state, logs and pid files in $SLURM_STATE
# (default /tmp/emotion-slurm). Accounting (slurmdbd + MariaDB) is part of it because submitit reads job
# states with sacct: without it, a cancelled job is never seen to end. Needs root: the daemons run as root
# (SlurmUser=root) and the configuration goes to /etc/slurm and /etc/munge.
set -euo pipefail

STATE=${SLURM_STATE:-/tmp/emotion-slurm}
CLUSTER=emotion
PARTITION=debug

log() { echo "slurm-cluster: $*" >&2; }

wait_for() {  # wait_for <seconds> <description> <command...>
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  log "gave up waiting for $what; logs are in $STATE"
  return 1
}

install_packages() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server mariadb-client >/dev/null
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged --force
  wait_for 10 munged munge -n
}

start_mariadb() {
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if [ ! -d "$STATE/mysql/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$STATE/mysql" --skip-test-db >"$STATE/mariadb-install.log" 2>&1
  fi
  # The default socket: slurmdbd connects to localhost through it, as root, which unix_socket auth admits.
  mariadbd --user=mysql --datadir="$STATE/mysql" --socket=/run/mysqld/mysqld.sock --skip-networking \
    --pid-file="$STATE/mysql/mariadb.pid" --log-error="$STATE/mysql/mariadb.log" \
    >>"$STATE/mariadb-console.log" 2>&1 &  # mysql owns only its datadir
  wait_for 30 MariaDB mariadb -e "select 1"
}

write_configs() {
  local node memory
  node=$(slurmd -C | head -n 1)
  memory=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$node")
  node=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$((memory * 9 / 10))/" <<<"$node")
  mkdir -p /etc/slurm "$STATE/spool" "$STATE/ctld"
  cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
LogFile=$STATE/slurmdbd.log
PidFile=$STATE/slurmdbd.pid
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
  cat >/etc/slurm/slurm.conf <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
KillWait=30
MinJobAge=60
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
$node
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  mkdir -p "$STATE"
  start_munge
  start_mariadb
  write_configs
  slurmdbd
  wait_for 30 slurmdbd sacctmgr -n list cluster
  sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
  slurmctld -i
  wait_for 30 slurmctld scontrol ping
  slurmd
  wait_for 30 "the node to be idle" bash -c "sinfo -h -o %T | grep -qx idle"
  log "up: partition $PARTITION on $(hostname -s); state and logs in $STATE"
}

stop_pid() {  # stop_pid <pid file> <name>
  local pid
  [ -s "$1" ] || return 0
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "$2 did not stop on SIGTERM; killing it"
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  # slurmd lingers on SIGTERM while a job step runs: cancel the jobs first.
  if scontrol ping >/dev/null 2>&1; then
    scancel --full --quiet --user=root 2>/dev/null || true
    wait_for 20 "jobs to end" bash -c '[ -z "$(squeue -h)" ]' || true
  fi
  stop_pid "$STATE/slurmd.pid" slurmd
  stop_pid "$STATE/slurmctld.pid" slurmctld
  stop_pid "$STATE/slurmdbd.pid" slurmdbd
  stop_pid "$STATE/mysql/mariadb.pid" mariadb
  pkill -u munge -x munged 2>/dev/null || true
  log "stopped"
}

case "${1:-}" in
  install) install_packages ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|stop" >&2; exit 2 ;;
esac
