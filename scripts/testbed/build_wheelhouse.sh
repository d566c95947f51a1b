#!/usr/bin/env bash
# Build the wheelhouses the test containers install from offline, one per container Python
# (Debian 12: 3.11, Debian 13: 3.13), with the host's ordinary pip. pip inside the containers
# cannot reach an index; the roles install with --no-index --find-links, as on air-gapped hosts.
#   usage: build_wheelhouse.sh [OUTDIR]     (default: .cache/wheelhouse)
# Cached: a wheelhouse whose stamp matches the requirements file is reused.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$root/.cache/wheelhouse}
reqs=$root/tests/wheelhouse-requirements.txt
pip_cmd=${PIP:-python3 -m pip}
arch=$(uname -m)

log() { printf '[build_wheelhouse] %s\n' "$*" >&2; }

stamp=$(sha256sum "$reqs" | cut -c1-16)
for pyver in 3.11 3.13; do
  dir="$out/py${pyver/./}"
  if [[ -f $dir/.stamp && $(cat "$dir/.stamp") == "$stamp" ]]; then
    log "$dir is up to date, reused"
    continue
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  log "downloading wheels for Python $pyver ($arch) into $dir"
  # shellcheck disable=SC2086
  $pip_cmd download --quiet --disable-pip-version-check \
    --only-binary=:all: --implementation cp \
    --python-version "$pyver" --abi "cp${pyver/./}" --abi abi3 --abi none \
    --platform "manylinux2014_${arch}" --platform "manylinux_2_17_${arch}" \
    --platform "manylinux_2_28_${arch}" --platform any \
    -r "$reqs" -d "$dir" 2> >(grep -v "^WARNING: Location 'file:" >&2)
  echo "$stamp" > "$dir/.stamp"
  log "$(find "$dir" -name '*.whl' | wc -l) wheels for Python $pyver"
done
