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

# stage NAME CMD...: run CMD, print its duration, remember the result; never exits.
stage() {
  local name=$1 start rc
  shift
  printf '\n==> [%s] %s\n' "$(date +%T)" "$name"
  start=$SECONDS
  "$@"
  rc=$?
  STAGE_NAMES+=("$name")
  STAGE_SECONDS+=($((SECONDS - start)))
  STAGE_RESULTS+=("$([[ $rc -eq 0 ]] && echo ok || echo "FAILED (exit $rc)")")
  printf '<== %s: %s in %d s\n' "$name" "${STAGE_RESULTS[-1]}" "${STAGE_SECONDS[-1]}"
  return "$rc"
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
  [[ $failed -eq 0 ]]
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
