#!/usr/bin/env bash
# A real single-node Slurm (munged + slurmctld + slurmd, no systemd) for the Slurm-backend
# tests. Idempotent: safe to run again with the daemons already up; a changed slurm.conf
# restarts them. Needs root; as any other user it says why and exits 0, and the tests that
# need Slurm then skip (tests/support/slurm_cluster.py says why; they fail instead where
# VIRNUC_REQUIRE_SLURM=1, as .ci/run sets).
#
# The node is NodeName=localhost (slurmd -N localhost) with two fake GPUs: gres.conf points
# at two /dev/null-like device nodes, so --gres=gpu:1 sets CUDA_VISIBLE_DEVICES without a GPU.
# Partitions: debug (default, UP) and down (DOWN: jobs pend with reason PartitionDown).
# No accounting (no slurmdbd, no sacct, --account is not checked): use squeue/scontrol.
set -euo pipefail

say() { echo "slurm-setup: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    say "not root (uid $(id -u)): not installing or starting Slurm; Slurm tests will skip"
    exit 0
fi

if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null \
    || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
fi

# poll CMD... until it succeeds or TIMEOUT seconds pass; WHAT names it in the failure.
wait_until() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            say "timed out after ${timeout}s waiting for ${what}"
            return 1
        fi
        sleep 0.2
    done
}

# ---- munge ---------------------------------------------------------------------------
key=/etc/munge/munge.key
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s $key ]]; then
    say "creating $key"
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile="$key"
    else
        dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
    fi
fi
chown munge:munge "$key"
chmod 0400 "$key"

munge_ok() { munge -n </dev/null | unmunge >/dev/null; }
if ! munge_ok 2>/dev/null; then
    say "starting munged"
    # --force: start even if a stale socket or pid file was left by an earlier run.
    runuser -u munge -- /usr/sbin/munged --force
    wait_until 15 "munged to answer" munge_ok
fi

# ---- slurm.conf / gres.conf ----------------------------------------------------------
cpus=$(nproc)
((cpus < 4)) && cpus=4 # oversubscribe small CI machines (config_overrides below)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
real_mem=$((mem_mb * 9 / 10))

for i in 0 1; do
    dev=/dev/fakegpu$i
    if [[ ! -e $dev ]]; then
        # a /dev/null clone (char 1:3); a plain file if this container may not mknod.
        mknod -m 0666 "$dev" c 1 3 2>/dev/null || touch "$dev"
    fi
done

install -d -m 0755 /etc/slurm /var/log/slurm /var/spool/slurmctld /var/spool/slurmd

conf=$(
    cat <<EOF
# Written by .ci/slurm-setup.sh: a single-node test cluster. Edits are overwritten.
ClusterName=virnucci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
# pgid, not linuxproc: with linuxproc a child orphaned by its dying batch shell (e.g. after
# "scancel --signal=TERM --batch") escapes tracking and outlives the job. Batch scripts should
# "exec" their program: a plain scancel then gives it the whole KillWait to exit.
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
MailProg=/bin/true
SlurmdParameters=config_overrides
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Short timeouts for tests: KillWait = seconds between SIGTERM and SIGKILL on scancel or
# time limit; finished jobs leave squeue after MinJobAge seconds.
KillWait=5
MinJobAge=10
InactiveLimit=0
OverTimeLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# refuse at submit a job that no partition could ever run (e.g. -c more than CPUs=)
EnforcePartLimits=ALL
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
PartitionName=down Nodes=localhost MaxTime=INFINITE State=DOWN
EOF
)
gres="NodeName=localhost Name=gpu File=/dev/fakegpu[0-1]"

changed=0
if [[ ! -f /etc/slurm/slurm.conf ]] || [[ $(cat /etc/slurm/slurm.conf) != "$conf" ]]; then
    printf '%s\n' "$conf" >/etc/slurm/slurm.conf
    changed=1
fi
if [[ ! -f /etc/slurm/gres.conf ]] || [[ $(cat /etc/slurm/gres.conf) != "$gres" ]]; then
    printf '%s\n' "$gres" >/etc/slurm/gres.conf
    changed=1
fi

# ---- daemons -------------------------------------------------------------------------
pid_alive() { # a zombie is dead: PID 1 here may be slow to reap daemons that exited
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $state != Z* ]]
}
alive() { [[ -s $1 ]] && pid_alive "$(cat "$1")"; }

stop() { # stop the daemon whose pid file is $1, waiting for it to go
    local pidfile=$1 pid
    if alive "$pidfile"; then
        pid=$(cat "$pidfile")
        say "stopping $(basename "$pidfile" .pid) (pid $pid; slurm.conf changed)"
        kill "$pid"
        wait_until 30 "$(basename "$pidfile" .pid) to stop" eval "! pid_alive $pid"
    fi
}

if ((changed)); then
    stop /run/slurmd.pid
    stop /run/slurmctld.pid
fi

if ! alive /run/slurmctld.pid; then
    say "starting slurmctld"
    slurmctld
fi
wait_until 30 "slurmctld to answer (see /var/log/slurm/slurmctld.log)" scontrol ping
if ! alive /run/slurmd.pid; then
    say "starting slurmd -N localhost"
    slurmd -N localhost
fi

node_idle() { [[ $(sinfo -h -N -n localhost -p debug -o %t) == idle* ]]; }
node_usable() { [[ $(sinfo -h -N -n localhost -p debug -o %t) =~ ^(idle|mix|alloc) ]]; }
if ! wait_until 30 "node localhost to be up" node_usable; then
    # drained/down from an earlier run (e.g. unexpected reboot): resume it once.
    scontrol update NodeName=localhost State=RESUME || true
    wait_until 30 "node localhost to be up after RESUME" node_usable
fi

# A smoke test: srun and sbatch, with a fake GPU.
out=$(srun -p debug -N1 -n1 -c1 --gres=gpu:1 -t 1 --quiet bash -c 'echo "gpu=$CUDA_VISIBLE_DEVICES"')
[[ $out == gpu=* ]] || {
    say "srun smoke test printed '$out'"
    exit 1
}
job=$(sbatch --parsable -p debug -c1 -t 1 -J slurm-setup-smoke -o /dev/null --wrap true)
job_gone() { [[ -z $(squeue -h -j "$job" -t PD,R,CG -o %i 2>/dev/null) ]]; }
wait_until 30 "smoke job $job to finish" job_gone
node_idle || say "note: node is not idle (jobs of others are running): $(sinfo -h -N -o '%N %t')"
say "ok: $(sinfo -h -N -o '%N %P %t %c cpus %G')"
