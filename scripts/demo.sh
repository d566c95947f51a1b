#!/usr/bin/env bash
# What the collection is for, shown: a local container host (Debian 12, systemd) provisioned
# with taskstack.celery.site exactly as a user would, then the same load (3 tasks/s of 0.1-4 s,
# some with a countdown, some retrying, one long task) across four ways of deploying, one after
# another (scripts/demo_run.py):
#   a naive restart (systemctl restart, systemd's default KillMode=control-group) of the app
#   without acks_late, the same of the app with acks_late, taskstack.celery.deploy's drain and
#   its blue-green. It prints one table (sent, completed, lost, run twice, longest pause between
#   task starts against the no-deploy stretch, deploy time) and draws the run as one SVG
#   (scripts/demo_picture.py) from the run's own data, kept in .cache/demo/.
#   DEMO_DISTRO=debian13 make demo     the same on Debian 13
#   DEMO_KEEP=1 make demo              leave the container running afterwards (Flower's address
#                                      and credentials are printed)
#   DEMO_STRATEGIES="drain blue-green" make demo   only some of them
#   python scripts/demo_picture.py .cache/demo/<run>.json -o PICTURE.svg   redraw a run
# Exit 0 when every stage ran and the drain and blue-green deploys lost nothing and ran nothing
# twice.
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
  *) echo "DEMO_DISTRO must be debian12 or debian13" >&2; exit 2 ;;
esac
strategies=()
read -r -a strategies <<<"${DEMO_STRATEGIES:-naive-no-acks naive drain blue-green}"
for s in "${strategies[@]}"; do
  case "$s" in
    naive-no-acks|naive|drain|blue-green) ;;
    *) echo "DEMO_STRATEGIES: unknown strategy '$s' (naive-no-acks, naive, drain, blue-green)" >&2; exit 2 ;;
  esac
done
run=demo-$(date -u +%Y%m%dT%H%M%SZ)
data=.cache/demo/$run.json
picture=.cache/demo/$run.svg
log=.cache/logs/$run.log
mkdir -p .cache/demo .cache/logs

# The demo scenario's Molecule state directory of this checkout (its inventory and the
# credentials the roles generated): the one whose group vars name this checkout's demo app.
ephemeral() {
  grep -l "$TASKSTACK_ROOT/tests/demo_app" "$HOME"/.ansible/tmp/molecule.*.demo/inventory/group_vars/all \
    2>/dev/null | head -n 1 | sed 's|/inventory/group_vars/all$||'
}

cleanup() {
  if [[ ${DEMO_KEEP:-0} == 1 ]]; then
    local eph
    eph=$(ephemeral)
    echo
    echo "Kept the host $host:"
    echo "  Flower:   http://127.0.0.1:5560/  user admin, password in $eph/inventory/credentials/$host/flower_admin_password.txt"
    echo "  a shell:  docker exec -it $host bash"
    echo "  remove:   cd $TASKSTACK_ROOT && PATH=\$PWD/.venv/bin:\$PATH MOLECULE_DISTRO=$distro molecule destroy -s demo"
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

eph=$(ephemeral)
[[ -n $eph ]] || { echo "FAILED: no Molecule state directory of the demo scenario under $HOME/.ansible/tmp"; exit 1; }
# The run's whole output stays in $log, progress lines included.
under_load() {
  MOLECULE_EPHEMERAL_DIRECTORY=$eph ANSIBLE_CONFIG=$eph/ansible.cfg PYTHONUNBUFFERED=1 \
    python scripts/demo_run.py "$host" "$data" "${strategies[@]}" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  [[ $rc -eq 0 ]] || echo "---- the run failed (exit $rc); its whole output: $log"
  return "$rc"
}
stage "the same load across: ${strategies[*]} (about 2-3 min each)" under_load
run_rc=$?

draw() {
  [[ -s $data ]] || { echo "no data: $data was not written (see $log)"; return 1; }
  python scripts/demo_picture.py "$data" -o "$picture" --table >"$picture.table" || return 1
  # The picture is this run's: its embedded data matches the run's own ledger and reports.
  python scripts/demo_picture.py "$data" -o "$picture" --verify || return 1
  echo "drew $picture from $data"
}
stage "draw the picture from the run's data" draw
draw_rc=$?

# The stage table and why a stage failed, only when one did.
stage_summary >/dev/null || stage_summary
echo
[[ $draw_rc -eq 0 ]] && sed '$d' "$picture.table"
printf '\n%-10s %s\n%-10s %s\n%-10s %s\n' "picture" "$picture" "data" "$data" "log" "$log"
[[ $run_rc -eq 0 && $draw_rc -eq 0 ]] || exit 1
# The collection's strategies must lose nothing and run nothing twice.
python3 - "$data" <<'PYEOF'
import json, sys
sys.path.insert(0, "scripts")
from demo_picture import summary
bad = [r for r in map(summary, json.load(open(sys.argv[1]))["segments"])
       if r["strategy"] in ("drain deploy", "blue-green deploy") and (r["lost"] or r["run_twice"])]
for r in bad:
    print(f"FAILED: the {r['strategy']} lost {r['lost']} and ran {r['run_twice']} twice")
sys.exit(1 if bad else 0)
PYEOF
