# Sourced by the sbatch scripts in this folder (bash). Defines:
#   PYTHON             the interpreter ($PYTHON, default python)
#   dreamer_logdir     prints the value of --logdir in its arguments
#   run_requeueable    runs a command so that SLURM's signals reach it
#
# Signals: `#SBATCH --signal=B:USR1@120` sends USR1 to the batch shell only,
# 120 s before the time limit; preemption and scancel send TERM. Python runs
# in the background so the shell can trap both and forward them; main.py
# then saves a checkpoint and exits with status 3. After USR1 (or a 3 with
# no TERM seen) the job requeues itself, and the requeued job resumes from
# the logdir. After TERM it does not: a cancelled job stays cancelled, and a
# cluster that preempts with PreemptMode=REQUEUE requeues the job itself.
# The checkpoint must be written within the cluster's KillWait (30 s by
# default) after TERM, else SIGKILL ends the run at its previous checkpoint.

PREEMPTED=3  # main.py's exit status after a stop signal (embodied/core/preempt.py)

PYTHON="${PYTHON:-python}"

dreamer_logdir() {
  local prev=""
  for arg in "$@"; do
    case "$arg" in
      --logdir=*) echo "${arg#--logdir=}"; return 0 ;;
    esac
    if [ "$prev" = --logdir ]; then echo "$arg"; return 0; fi
    prev="$arg"
  done
  echo "A run under SLURM needs --logdir: a requeued job resumes from it." >&2
  return 1
}

_dreamer_forward() {
  _dreamer_signal="$1"
  if [ -n "$_dreamer_pid" ]; then kill -"$1" "$_dreamer_pid" 2>/dev/null || true; fi
}

run_requeueable() {
  _dreamer_signal="" _dreamer_pid=""
  # Trapped before the start: a signal in between is forwarded right after.
  trap '_dreamer_forward USR1' USR1
  trap '_dreamer_forward TERM' TERM
  "$@" &
  _dreamer_pid=$!
  if [ -n "$_dreamer_signal" ]; then _dreamer_forward "$_dreamer_signal"; fi
  local rc=0 last
  # A trapped signal interrupts wait; keep waiting until the run exits.
  while kill -0 "$_dreamer_pid" 2>/dev/null; do
    wait "$_dreamer_pid" && rc=0 || rc=$?
  done
  wait "$_dreamer_pid" 2>/dev/null && last=0 || last=$?
  [ "$last" -ne 127 ] && rc=$last
  trap - USR1 TERM
  # 138 = killed by USR1 before main.py installed its handler (still
  # importing): nothing new to save, the last checkpoint stands.
  if { [ "$rc" -eq "$PREEMPTED" ] && [ "$_dreamer_signal" != TERM ]; } ||
      { [ "$rc" -eq 138 ] && [ "$_dreamer_signal" = USR1 ]; }; then
    if [ -n "${SLURM_JOB_ID:-}" ]; then
      echo "Run stopped with its checkpoint saved; requeueing job" \
        "$SLURM_JOB_ID (restart $(( ${SLURM_RESTART_COUNT:-0} + 1 )))."
      scontrol requeue "$SLURM_JOB_ID" ||
        echo "scontrol requeue failed: resubmit the same command to resume." >&2
    fi
  fi
  return "$rc"
}
