# shellcheck shell=bash
# Shared helpers of the project's entry points: stage timing and the test environment.

TASKSTACK_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TASKSTACK_ROOT
export PATH="$TASKSTACK_ROOT/.venv/bin:$PATH"
# The checkout is the collection: reach it as taskstack.celery without installing it.
export ANSIBLE_COLLECTIONS_PATH="$TASKSTACK_ROOT/.cache/collections"
export ANSIBLE_FORCE_COLOR=false
export PY_COLORS=0
export MOLECULE_NO_COLOR=1
export NO_COLOR=1

link_collection() {
  local dir="$TASKSTACK_ROOT/.cache/collections/ansible_collections/taskstack"
  mkdir -p "$dir"
  ln -sfn ../../../.. "$dir/celery"
}

STAGE_NAMES=()
STAGE_SECONDS=()
STAGE_RESULTS=()
# Why each failed stage failed, a few lines each: printed again after the summary table, since
# a CI page often keeps only the end of the output and a stage's own output scrolls away.
STAGE_WHY=()

# stage NAME CMD...: run CMD, print its duration, remember the result; never exits.
stage() {
  local name=$1 start rc out
  shift
  printf '\n==> [%s] %s\n' "$(date +%T)" "$name"
  start=$SECONDS
  out=$(mktemp)
  "$@" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  record_stage "$name" "$rc" $((SECONDS - start)) "$out"
  rm -f "$out"
  return "$rc"
}

# record_stage NAME RC SECONDS [OUTPUT_FILE]: remember a stage's result and print it; for a
# failed stage with an output file, keep why it failed for the end of the run.
record_stage() {
  if [[ $2 -ne 0 && -n ${4:-} && -s ${4:-} ]]; then
    STAGE_WHY+=("$(failure_digest "$1" "$4")")
  fi
  STAGE_NAMES+=("$1")
  STAGE_SECONDS+=("$3")
  STAGE_RESULTS+=("$([[ $2 -eq 0 ]] && echo ok || echo "FAILED (exit $2)")")
  printf '<== %s: %s in %d s\n' "$1" "${STAGE_RESULTS[-1]}" "$3"
}

stage_summary() {
  local i total=0 failed=0
  printf '\n%-44s %8s  %s\n' "stage" "seconds" "result"
  for i in "${!STAGE_NAMES[@]}"; do
    printf '%-44s %8d  %s\n' "${STAGE_NAMES[$i]}" "${STAGE_SECONDS[$i]}" "${STAGE_RESULTS[$i]}"
    total=$((total + STAGE_SECONDS[i]))
    [[ ${STAGE_RESULTS[$i]} == ok ]] || failed=$((failed + 1))
  done
  printf '%-44s %8d  %s\n' "total" "$total" "$((${#STAGE_NAMES[@]} - failed)) passed, $failed failed"
  printf '%-44s %8d  %s\n' "wall clock" "$SECONDS" "(scenarios run side by side)"
  if ((${#STAGE_WHY[@]})); then
    printf '\nWhy the failed stages failed (their whole output is above, logs in .cache/logs):\n'
    printf '%s\n' "${STAGE_WHY[@]}"
  fi
  [[ $failed -eq 0 ]]
}

# failure_digest NAME OUTPUT_FILE: the lines of a failed stage's output that say why: a
# scenario's "failed steps, tasks and tests" section (scripts/molecule_scenario.sh), else the
# output's last lines.
failure_digest() {
  local why
  why=$(sed -n '/^---- failed steps, tasks and tests:/,/^---- last [0-9]* lines of the log:/p' "$2" \
    | sed '1d;$d' | tail -n 25)
  [[ -n $why ]] || why=$(tail -n 15 "$2")
  printf -- '---- %s\n%s\n' "$1" "$why"
}

link_collection

# quietly LOGNAME CMD...: run CMD with its output in .cache/logs/LOGNAME.log; show the log's
# tail only when it fails.
quietly() {
  local log="$TASKSTACK_ROOT/.cache/logs/$1.log" rc
  shift
  mkdir -p "$(dirname "$log")"
  "$@" >"$log" 2>&1
  rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "---- failed (exit $rc); last lines of $log:"
    tail -n 40 "$log"
  fi
  return "$rc"
}

# run_scenarios JOBS "SCENARIO DISTRO"...: run scripts/molecule_scenario.sh for each pair, JOBS
# at a time in the order given, never two of one scenario at once. Each scenario's output is
# printed whole when it ends, as a stage with its duration.
run_scenarios() {
  local jobs=$1 dir pid i job scenario busy started rc seconds
  shift
  local -a queue=("$@")
  local -A running=()
  dir=$(mktemp -d)
  while ((${#queue[@]} + ${#running[@]} > 0)); do
    started=1
    while ((started && ${#running[@]} < jobs)); do
      started=0
      busy=" ${running[*]} "
      for i in "${!queue[@]}"; do
        job=${queue[$i]}
        scenario=${job% *}
        [[ $busy == *" $scenario "* ]] && continue
        unset "queue[$i]"
        (
          start=$SECONDS
          scripts/molecule_scenario.sh "$scenario" "${job#* }" </dev/null >"$dir/${job/ /-}.out" 2>&1
          echo "$? $((SECONDS - start))" >"$dir/${job/ /-}.rc"
        ) &
        running[$!]="$scenario"
        printf '\n--> [%s] molecule %s (%s) started\n' "$(date +%T)" "$scenario" "${job#* }"
        started=1
        break
      done
    done
    wait -n -p pid "${!running[@]}"
    for pid in "${!running[@]}"; do
      kill -0 "$pid" 2>/dev/null && continue
      wait "$pid" 2>/dev/null
      unset "running[$pid]"
      for f in "$dir"/*.rc; do
        [[ -e $f ]] || continue
        job=$(basename "$f" .rc)
        read -r rc seconds <"$f"
        printf '\n==> [%s] molecule %s (%s)\n' "$(date +%T)" "${job%-*}" "${job##*-}"
        cat "$dir/$job.out"
        record_stage "molecule ${job%-*} (${job##*-})" "$rc" "$seconds" "$dir/$job.out"
        rm -f "$f"
      done
    done
  done
  rm -rf "$dir"
}

# beside NAME CMD...: start CMD in the background now, while the caller goes on (the Molecule
# scenarios); its output is kept. beside_done prints each such job's output when it has ended
# and records it as a stage with its own duration.
BESIDE_DIR=
BESIDE_NAMES=()
BESIDE_PIDS=()
beside() {
  local name=$1 n
  shift
  [[ -n $BESIDE_DIR ]] || BESIDE_DIR=$(mktemp -d)
  n=${#BESIDE_NAMES[@]}
  (
    start=$SECONDS
    "$@" </dev/null >"$BESIDE_DIR/$n.out" 2>&1
    echo "$? $((SECONDS - start))" >"$BESIDE_DIR/$n.rc"
  ) &
  BESIDE_NAMES+=("$name")
  BESIDE_PIDS+=("$!")
  printf '\n--> [%s] %s started beside what follows\n' "$(date +%T)" "$name"
}

beside_done() {
  local i rc seconds
  for i in "${!BESIDE_NAMES[@]}"; do
    wait "${BESIDE_PIDS[$i]}"
    read -r rc seconds <"$BESIDE_DIR/$i.rc"
    printf '\n==> [%s] %s\n' "$(date +%T)" "${BESIDE_NAMES[$i]}"
    cat "$BESIDE_DIR/$i.out"
    record_stage "${BESIDE_NAMES[$i]}" "$rc" "$seconds" "$BESIDE_DIR/$i.out"
  done
  [[ -z $BESIDE_DIR ]] || rm -rf "$BESIDE_DIR"
}
