#!/usr/bin/env bash
# The main job on an embedded default: a local container host (Debian 12, systemd) provisioned
# with taskstack.celery.site exactly as a user would, a mixed load of tasks put on it, a deploy
# with taskstack.celery.deploy under that load, and a count of what was lost.
#   DEMO_DISTRO=debian13 make demo     the same on Debian 13
#   DEMO_KEEP=1 make demo              leave the container running afterwards
set -uo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TASKSTACK_ROOT" || exit 1

distro=${DEMO_DISTRO:-debian12}
host=taskstack-demo-$distro
export MOLECULE_DISTRO=$distro
case "$distro" in
  debian12) export TASKSTACK_PYTAG=311 ;;
  debian13) export TASKSTACK_PYTAG=313 ;;
esac
run=demo$(date +%s)

in_app() {
  # Python in the app's virtualenv on the demo host, with the app's environment file.
  docker exec "$host" bash -c "set -a; . /etc/celery/demo.env; set +a; cd /srv/celery/app; \
    /opt/celery/venv/bin/python $*"
}

cleanup() {
  if [[ ${DEMO_KEEP:-0} == 1 ]]; then
    echo "Kept: docker exec -it $host bash   (remove: molecule destroy -s demo)"
  else
    molecule destroy -s demo >/dev/null 2>&1
  fi
}

stage "toolchain (.venv)" scripts/testbed/venv.sh || exit 1
stage "docker engine" scripts/testbed/ensure_docker.sh || exit 1
stage "test image ($distro)" scripts/testbed/build_images.sh "$distro" || exit 1
stage "wheelhouse" scripts/testbed/build_wheelhouse.sh || exit 1
trap cleanup EXIT
stage "create the container host $host" quietly demo-create molecule create -s demo || exit 1
stage "provision it: taskstack.celery.site" quietly demo-site molecule converge -s demo || exit 1

start_load() {
  docker exec "$host" systemd-run --quiet --unit "demo-load-$run" -p User=celery -p Group=celery \
    -p EnvironmentFile=/etc/celery/demo.env -p WorkingDirectory=/srv/celery/app \
    /opt/celery/venv/bin/python -m demo.producer "$run" 4 && sleep 10
}
stage "put load on it (4 tasks/s, 0.1-4 s long, some with countdown)" start_load || exit 1
deploy() {
  local log=.cache/logs/demo-deploy.log
  mkdir -p .cache/logs
  molecule side-effect -s demo >"$log" 2>&1
  local rc=$?
  # The drain's progress lines and the recap; the whole run is in the log.
  grep -E 'celery_drain \[|^taskstack-demo.*: ok=' "$log"
  [[ $rc -eq 0 ]] || tail -n 40 "$log"
  return "$rc"
}
stage "deploy under load: taskstack.celery.deploy (graceful drain)" deploy
deploy_rc=$?

settle() {
  sleep 10
  in_app -c "'from demo.tasks import ledger; ledger().set(\"demo:run:$run:stop\", 1)'"
  # Let every task sent so far finish (the longest is 4 s, countdowns up to 5 s).
  sleep 12
}
stage "stop the load and let the last tasks finish" settle
counts=$(in_app -m demo.report "$run")
[[ -n $counts ]] || { echo "could not count the tasks (demo.report failed)"; exit 1; }

printf '\n%-32s %s\n' "deploy" "$([[ $deploy_rc -eq 0 ]] && echo ok || echo "FAILED (exit $deploy_rc)")"
printf '%-32s %s\n' "report" ".cache/demo-deploy-report.json"
printf '%-32s %s\n' "tasks (sent/completed/lost/twice)" "$counts"
stage_summary >/dev/null || true
lost=$(python3 -c "import json,sys; c=json.loads(sys.argv[1]); print(c['lost'] + c['run_twice'])" "$counts")
[[ $deploy_rc -eq 0 && $lost -eq 0 ]]
