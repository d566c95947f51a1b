#!/usr/bin/env bash
# ansible-test sanity on a copy of the collection, offline except for PyPI.
#
# ansible-test needs the collection at a path ending in ansible_collections/<ns>/<name>, so the
# checkout is copied to .cache/ansible_collections/taskstack/celery. It runs with the
# toolchain's own Python (--local); the tests that need packages of their own (pylint,
# validate-modules, yamllint, ...) get virtualenvs that ansible-test caches under its HOME,
# here .cache/ansible-test, so a second run installs nothing.
#
# ansible-test bootstraps pip in those virtualenvs with a get-pip.py it downloads from
# ci-files.testing.ansible.com, a host this project's machines cannot reach. It uses a cached
# copy when one exists: a stand-in written below installs pip from pip's wheel on PyPI.
#   scripts/sanity.sh [ansible-test sanity options]   e.g. --test validate-modules
set -uo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$TASKSTACK_ROOT" || exit 1

python_version=3.11
copy="$TASKSTACK_ROOT/.cache/ansible_collections/taskstack/celery"
export HOME="$TASKSTACK_ROOT/.cache/ansible-test"
mkdir -p "$copy" "$HOME"

# The pip version ansible-test pins for its virtualenvs (get_venv_packages).
pip_version=$(python - "$python_version" <<'EOF'
import sys
from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.host_configs import NativePythonConfig
print(get_venv_packages(NativePythonConfig(version=sys.argv[1]))["pip"])
EOF
) || { echo "cannot ask ansible-test which pip it bootstraps"; exit 1; }
get_pip="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
wheels="$HOME/pip-wheel"
if [[ ! -s $get_pip ]]; then
  mkdir -p "$(dirname "$get_pip")" "$wheels"
  python -m pip download -q --no-deps --only-binary=:all: -d "$wheels" "pip==$pip_version" \
    || { echo "cannot download pip $pip_version from PyPI"; exit 1; }
  wheel=$(ls "$wheels"/pip-"$pip_version"-*.whl)
  cat >"$get_pip.tmp" <<EOF
# Stand-in for get-pip.py (written by scripts/sanity.sh): pip installs itself from its wheel.
# ansible-test passes pip options and requirements; setuptools and wheel are never wanted.
import sys
sys.path.insert(0, "$wheel")
from pip._internal.cli.main import main
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--find-links", "$wheels"] + args))
EOF
  mv "$get_pip.tmp" "$get_pip"
fi

# A fresh copy each run (tar, not rsync: rsync is not on Debian's minimal machines). Only
# tests/output, ansible-test's results and temporary files, is kept between runs.
find "$copy" -mindepth 1 -maxdepth 1 ! -name tests -exec rm -rf {} +
find "$copy/tests" -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {} + 2>/dev/null
tar -C "$TASKSTACK_ROOT" -c --exclude=./.venv --exclude=./.cache --exclude=./.git \
  --exclude=./.ansible --exclude=./tests/output --exclude=__pycache__ --exclude=.pytest_cache . \
  | tar -C "$copy" -x || exit 1
cd "$copy" || exit 1
# ansible-test lists files through git when it finds a repository, and walking up from here it
# would find the checkout's own, in which .cache is ignored: every target would be skipped. A
# repository of the copy's own (nothing committed) makes it list the copy's files.
git init -q . || exit 1
ansible-test sanity --color no --python "$python_version" --local "$@"
