#!/usr/bin/env bash
# Run one Molecule scenario on one distro; on failure, print why before the containers go.
#   usage: molecule_scenario.sh SCENARIO DISTRO
set -uo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

scenario=$1
distro=$2
export MOLECULE_DISTRO=$distro
case "$distro" in
  debian12) export TASKSTACK_PYTAG=311 ;;
  debian13) export TASKSTACK_PYTAG=313 ;;
esac
cd "$TASKSTACK_ROOT" || exit 1
# One run of a scenario at a time on this machine, whichever checkout or distro starts it: its
# services listen on the scenario's ports on the shared host loopback (and its containers are
# named taskstack-SCENARIO-DISTRO).
exec 9>"/tmp/taskstack-molecule-$scenario.lock"
if ! flock -n 9; then
  echo "---- molecule $scenario on $distro: another run of $scenario holds the lock, waiting"
  flock 9
fi
log=$TASKSTACK_ROOT/.cache/logs/molecule-$scenario-$distro.log
mkdir -p "$(dirname "$log")"

# Holding the lock, nothing else may use this scenario's container: one left by a run that was
# killed (a cancelled job, a CI timeout, a developer's Ctrl-C) would make `create` fail on its
# name, and Molecule state left by such a run would make it skip `create` and then find no
# container. Remove both.
for c in $(docker ps -aq --filter "name=^taskstack-$scenario-$distro\$"); do
  echo "---- removing the container $c left by an earlier run of $scenario on $distro"
  docker rm -f "$c" >/dev/null
done
rm -rf "${HOME:-/root}"/.ansible/tmp/molecule.*."$scenario"

molecule test -s "$scenario" --destroy never >"$log" 2>&1
rc=$?
if [[ $rc -ne 0 ]]; then
  echo "---- molecule $scenario on $distro FAILED (exit $rc); full log: $log"
  echo "---- failed steps, tasks and tests:"
  grep -E 'Executed: Failed|fatal:|FAILED|failed=[1-9]|ERROR|AssertionError|assert |CRITICAL|^\*  => ' "$log" \
    | grep -vE 'RETRYING|glob failed' | tail -n 40
  echo "---- last 80 lines of the log:"
  tail -n 80 "$log"
  for c in $(docker ps -a --filter "name=taskstack-$scenario-$distro" --format '{{.Names}}'); do
    echo "---- $c: container state, its own output, systemctl --failed, the journal's last 60 lines"
    docker inspect --format '{{.State.Status}} (exit {{.State.ExitCode}})' "$c"
    docker logs --tail 20 "$c" 2>&1
    docker exec "$c" systemctl --failed --no-pager 2>&1 | tail -n 20
    docker exec "$c" journalctl --no-pager -n 60 2>&1
  done
else
  grep -E '(converge|idempotence|verify).*Executed|passed|failed' "$log" | tail -n 8
fi
molecule destroy -s "$scenario" >>"$log" 2>&1 || true
exit "$rc"
