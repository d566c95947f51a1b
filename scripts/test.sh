#!/usr/bin/env bash
# The whole test suite: toolchain, testbed, lint, unit tests, every Molecule scenario, and
# ansible-test sanity beside the scenarios.
# This is what `make test` and CI (.ci/run) run. Each stage prints its duration; the suite
# prints a table and a total at the end and exits non-zero if any stage failed.
#   TASKSTACK_SCENARIOS="smoke redis"   run only these scenarios
#   TASKSTACK_DISTROS="debian12"        run only on these distros
#   TASKSTACK_JOBS=1                    scenarios one at a time (default 2 at once)
set -uo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TASKSTACK_ROOT" || exit 1

stage "toolchain (.venv)" scripts/testbed/venv.sh || { stage_summary; exit 1; }
stage "docker engine" scripts/testbed/ensure_docker.sh || { stage_summary; exit 1; }
stage "test images" scripts/testbed/build_images.sh debian12 debian13 || { stage_summary; exit 1; }
stage "wheelhouse" scripts/testbed/build_wheelhouse.sh || { stage_summary; exit 1; }
stage "host packages" scripts/testbed/host_packages.sh || { stage_summary; exit 1; }
stage "lint" scripts/lint.sh
stage "unit tests" python -m pytest -q -p no:cacheprovider tests/unit
stage "integration tests (real Redis and worker on the host)" \
  python -m pytest -q -p no:cacheprovider -rs tests/integration

# Molecule scenarios, TASKSTACK_JOBS (default 2) at a time: most of a scenario's time is
# waiting (systemd, drains, timeouts), so two share the 2-core CI machine well. Two runs of
# the same scenario never overlap (they share ports and Molecule's state directory).
# The matrix is read on fd 3: molecule and ansible read stdin and would eat its lines.
pending=()
while read -r scenario distros <&3; do
  [[ -z $scenario || $scenario == \#* ]] && continue
  if [[ -n ${TASKSTACK_SCENARIOS:-} && " $TASKSTACK_SCENARIOS " != *" $scenario "* ]]; then
    continue
  fi
  for distro in $distros; do
    if [[ -n ${TASKSTACK_DISTROS:-} && " $TASKSTACK_DISTROS " != *" $distro "* ]]; then
      continue
    fi
    pending+=("$scenario $distro")
  done
done 3< tests/molecule-matrix.txt
# ansible-test sanity needs no containers: it runs beside the scenarios, which spend most of
# their time waiting, and is reported after them.
beside "ansible-test sanity (beside the scenarios)" scripts/sanity.sh
run_scenarios "${TASKSTACK_JOBS:-2}" "${pending[@]}"
beside_done

stage_summary
