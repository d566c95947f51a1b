#!/usr/bin/env bash
# Install the pinned test and lint toolchain into the project-local virtualenv .venv.
# Reused while tests/requirements.txt and tests/constraints.txt are unchanged.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${TASKSTACK_VENV:-$root/.venv}
reqs=$root/tests/requirements.txt
cons=$root/tests/constraints.txt

log() { printf '[venv] %s\n' "$*" >&2; }

stamp=$(cat "$reqs" "$cons" | sha256sum | cut -c1-16)
if [[ -x $venv/bin/python && -f $venv/.stamp && $(cat "$venv/.stamp") == "$stamp" ]]; then
  log "$venv is up to date, reused"
  exit 0
fi

# The interpreter that creates the venv must not be the venv's own (it is about to go).
python=${PYTHON:-$(PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vx "$venv/bin" | paste -sd:) command -v python3)}
if ! "$python" -m venv --help >/dev/null 2>&1 || ! "$python" -c 'import ensurepip' 2>/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing python3-venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  else
    log "$python cannot create virtualenvs: install the venv module (Debian: python3-venv)"
    exit 1
  fi
fi

log "creating $venv"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip \
  2> >(grep -v "^WARNING: Location 'file:" >&2)
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs" -c "$cons" \
  2> >(grep -v "^WARNING: Location 'file:" >&2)
echo "$stamp" > "$venv/.stamp"
log "installed: $(PATH="$venv/bin:$PATH" ansible --version | head -n1), $(PATH="$venv/bin:$PATH" molecule --version 2>/dev/null | head -n1)"
