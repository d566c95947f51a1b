#!/usr/bin/env bash
# Make sure a Docker engine answers. Uses the running one (developer laptop, CI runner
# with Docker); on a bare Debian host where we are root, installs docker.io and starts
# dockerd in the background. Anything else: fail and say what to do.
set -euo pipefail

log() { printf '[ensure_docker] %s\n' "$*" >&2; }

if docker info >/dev/null 2>&1; then
  log "using the running Docker engine ($(docker info --format '{{.ServerVersion}}'))"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  log "no Docker engine answers and we are not root: start Docker (or add yourself to the docker group) and re-run"
  exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    log "no Docker engine and no apt-get: install Docker for this OS and re-run"
    exit 1
  fi
  log "installing docker.io from the distribution archive"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

log "starting dockerd in the background (log: /var/log/dockerd.log)"
# --iptables=false: the sandboxed hosts this runs on cannot program iptables; the test
# containers use host networking, so nothing needs NAT.
setsid dockerd --iptables=false >/var/log/dockerd.log 2>&1 < /dev/null &

for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    log "dockerd is up"
    exit 0
  fi
  sleep 1
done
log "dockerd did not answer within 60 s; last lines of /var/log/dockerd.log:"
tail -n 20 /var/log/dockerd.log >&2 || true
exit 1
