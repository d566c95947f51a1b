#!/usr/bin/env bash
# Host packages the suite uses outside containers: redis-server (the plugins' integration
# tests run a real Redis and a real worker on the host loopback) and shellcheck (lint).
# Installs what is missing on a Debian host where we are root; elsewhere says what to install.
set -euo pipefail

log() { printf '[host_packages] %s\n' "$*" >&2; }

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
if [[ ${#missing[@]} -eq 0 ]]; then
  log "redis-server and shellcheck present"
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  log "missing: ${missing[*]}; install them (the integration tests skip without redis-server)"
  exit 0
fi
log "installing ${missing[*]}"
apt-get update -qq
# policy-rc.d: install redis-server without starting Debian's own instance on port 6379.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
NEEDRESTART_SUSPEND=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1
