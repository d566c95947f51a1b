#!/usr/bin/env bash
# What a deploy costs under load, per way of restarting the workers, in one run: the deploy
# scenario's container (molecule/deploy, Redis on 6381), the same producer load (3 tasks/s of
# 0.1-4 s, some with a countdown, plus one long task started before the no-deploy baseline and
# still running when the deploy begins), then
#   naive       systemctl restart with KillMode=control-group (what users do today)
#   drain       taskstack.celery.deploy, drain strategy
#   blue-green  taskstack.celery.deploy -e celery_deploy_strategy=blue_green
# and prints for each: sent, lost, run twice, the longest pause between task starts during the
# deploy against the same run's no-deploy baseline, and how long the deploy took.
# It draws the run as scripts/demo_picture.py does for make demo: .cache/bench/<time>.svg, from the
# harness's own record of each run (loadlib.record, TASKSTACK_LOAD_RECORD), kept beside it as JSON.
# A benchmark, not a test: the figures depend on the machine; compare them within one run.
#
#   usage: benchmarks/deploy_compare.sh [debian12|debian13]
#   env:   BENCH_KEEP=1 keeps the container afterwards (molecule destroy -s deploy removes it)
set -uo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/../scripts/lib.sh"
cd "$TASKSTACK_ROOT" || exit 1

export MOLECULE_DISTRO=${1:-debian12}
case "$MOLECULE_DISTRO" in
  debian12) export TASKSTACK_PYTAG=311 ;;
  debian13) export TASKSTACK_PYTAG=313 ;;
  *) echo "usage: $0 [debian12|debian13]" >&2; exit 2 ;;
esac
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

bench_start=$SECONDS
echo "converging the deploy scenario's container (about 4-5 min on 2 cores)..."
molecule converge -s deploy >"$out/converge.log" 2>&1 || { tail -n 40 "$out/converge.log"; exit 1; }
# Molecule's state directory of this checkout's deploy scenario: the one converge just used.
eph=$(find "$HOME/.ansible/tmp" -maxdepth 1 -name "molecule.*.deploy" -printf '%T@ %p\n' | sort -rn | head -n 1 | cut -d' ' -f2)
host=taskstack-deploy-$MOLECULE_DISTRO

stamp=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p .cache/bench
export TASKSTACK_LOAD_RECORD=$out/segments.jsonl
(cd molecule/deploy && MOLECULE_EPHEMERAL_DIRECTORY=$eph ANSIBLE_CONFIG=$eph/ansible.cfg \
  python -m pytest -s -p no:cacheprovider --hosts="ansible://$host" --ansible-inventory="$eph/inventory" \
  tests/test_deploy.py -k "naive_restart or drain_deploy_under_load or blue_green_deploy_under_load") \
  >"$out/bench.log" 2>&1
rc=$?

python - "$out/bench.log" <<'PYEOF'
import json, re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r".*load across (\w+): (\{.*\})$", line.strip())
    if m:
        names = {"naive_restart": "naive restart", "drain_deploy": "drain", "blue_green_deploy": "blue-green"}
        rows[names.get(m.group(1), m.group(1))] = json.loads(m.group(2))
print(f"{'strategy':<14}{'sent':>6}{'lost':>6}{'twice':>7}{'ETA early':>11}{'baseline pause':>16}"
      f"{'deploy pause':>14}{'deploy s':>10}")
for name, r in rows.items():
    print(f"{name:<14}{r['sent']:>6}{r['lost']:>6}{r['run_twice']:>7}{r['eta_early']:>11}"
          f"{r['baseline_pause']:>15.1f}s{r['action_pause']:>13.1f}s{r['action_seconds']:>9.1f}s")
if len(rows) < 3:
    print("(a run did not finish: see the pytest output above)")
PYEOF
if [[ -s $TASKSTACK_LOAD_RECORD ]]; then
  python - "$TASKSTACK_LOAD_RECORD" ".cache/bench/$stamp.json" "$MOLECULE_DISTRO" <<'PYEOF'
import json, sys
names = {"naive_restart": "naive restart", "drain_deploy": "drain", "blue_green_deploy": "blue-green"}
segments = [json.loads(line) for line in open(sys.argv[1])]
for seg in segments:
    seg["strategy"] = names.get(seg["strategy"], seg["strategy"])
json.dump({"title": f"benchmarks/deploy_compare.sh ({sys.argv[3]})", "segments": segments}, open(sys.argv[2], "w"))
PYEOF
  python scripts/demo_picture.py ".cache/bench/$stamp.json" -o ".cache/bench/$stamp.svg" >/dev/null \
    && echo "picture: .cache/bench/$stamp.svg (data: .cache/bench/$stamp.json)"
fi
[[ $rc -eq 0 ]] || { echo "---- pytest output:"; tail -n 60 "$out/bench.log"; }
echo "benchmark: $((SECONDS - bench_start)) s in all"
if [[ ${BENCH_KEEP:-0} != 1 ]]; then
  molecule destroy -s deploy >/dev/null 2>&1 || true
fi
exit "$rc"
