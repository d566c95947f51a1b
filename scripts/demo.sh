#!/usr/bin/env bash
# The main job on an embedded default: a local container host (Debian 12, systemd), provisioned
# with taskstack.celery.site exactly as a user would, then load and a deploy under load, and a
# count of what was lost.
#   DEMO_DISTRO=debian13 make demo     the same on Debian 13
#   DEMO_KEEP=1 make demo              leave the container running afterwards
set -uo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TASKSTACK_ROOT" || exit 1

distro=${DEMO_DISTRO:-debian12}
export MOLECULE_DISTRO=$distro
case "$distro" in
  debian12) export TASKSTACK_PYTAG=311 ;;
  debian13) export TASKSTACK_PYTAG=313 ;;
esac

stage "toolchain (.venv)" scripts/testbed/venv.sh || exit 1
stage "docker engine" scripts/testbed/ensure_docker.sh || exit 1
stage "test image ($distro)" scripts/testbed/build_images.sh "$distro" || exit 1
stage "wheelhouse" scripts/testbed/build_wheelhouse.sh || exit 1
stage "create the container host taskstack-demo-$distro" molecule create -s demo || exit 1
stage "provision it: ansible-playbook taskstack.celery.site" molecule converge -s demo
rc=$?

cat <<MSG

The host taskstack-demo-$distro runs systemd and has been provisioned by taskstack.celery.site
with what the collection has so far (the shared celery role: service account, directories).
Next, as the Redis, Celery and deploy roles land, this demo will:
  1. provision the whole stack (Redis broker, workers, beat, Flower) on this host;
  2. put a mixed load of tasks on it and keep it running;
  3. deploy under load with taskstack.celery.deploy (graceful drain);
  4. print sent / completed / lost / run twice.
MSG

if [[ ${DEMO_KEEP:-0} == 1 ]]; then
  echo "Kept: docker exec -it taskstack-demo-$distro bash   (remove: molecule destroy -s demo)"
else
  stage "remove the container host" molecule destroy -s demo >/dev/null
fi
stage_summary >/dev/null || true
exit "$rc"
