#!/usr/bin/env bash
# yamllint, ansible-lint (production profile), the collection build, and shellcheck where
# installed. Fails on any finding.
set -uo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TASKSTACK_ROOT" || exit 1
rc=0

echo "-- yamllint"
yamllint --strict . || rc=1
echo "-- ansible-lint (profile production)"
ansible-lint --offline -q || rc=1
echo "-- changelog fragments"
antsibull-changelog lint || rc=1
echo "-- role READMEs generated from the argument specs are up to date"
python scripts/role_readme.py --check || rc=1
echo "-- argument specs match defaults, every option documented"
python -m pytest -q -p no:cacheprovider tests/lint || rc=1
echo "-- ansible-galaxy collection build + offline install"
build=$(mktemp -d)
if ansible-galaxy collection build --force --output-path "$build" . >/dev/null \
   && ANSIBLE_COLLECTIONS_PATH="$build/installed" ansible-galaxy collection install --offline \
        -p "$build/installed" "$build"/taskstack-celery-*.tar.gz >/dev/null \
   && ANSIBLE_COLLECTIONS_PATH="$build/installed" ansible-playbook --syntax-check \
        -i localhost, taskstack.celery.site >/dev/null; then
  echo "built $(basename "$build"/taskstack-celery-*.tar.gz); installed offline, taskstack.celery.site resolves"
  if tar -tzf "$build"/taskstack-celery-*.tar.gz | grep -qE '^(molecule|tests|scripts|\.ci)/'; then
    echo "the artifact carries test files: fix build_ignore in galaxy.yml"; rc=1
  fi
else
  echo "collection build or offline install failed"; rc=1
fi
rm -rf "$build"
if command -v shellcheck >/dev/null 2>&1; then
  echo "-- shellcheck"
  shellcheck -x scripts/*.sh scripts/testbed/*.sh .ci/run || rc=1
fi
exit $rc
