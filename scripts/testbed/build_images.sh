#!/usr/bin/env bash
# Build the Molecule test images (Debian 12 and 13 with systemd) and cache them.
#   usage: build_images.sh [debian12] [debian13]     (default: both)
# Base image: a local or pullable debian:<suite>; where no registry answers, one made from
# Debian's archive with debootstrap (mirror read from this host's apt sources) and imported
# under a project-owned tag. A user's own debian:* images are never written.
# Cache: each image carries a label with the hash of its inputs; a second run reuses it.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
project_tag=${TASKSTACK_IMAGE_PREFIX:-taskstack-celery}
# Packages the roles install: their .deb files are cached in the image, not installed.
role_packages="redis-server redis-tools python3-venv python3-pip-whl python3-setuptools-whl python3-packaging acl"

log() { printf '[build_images] %s\n' "$*" >&2; }

suite_of() {
  case "$1" in
    debian12) echo bookworm ;;
    debian13) echo trixie ;;
    *) log "unknown distro '$1' (known: debian12 debian13)"; exit 2 ;;
  esac
}

apt_mirror() {
  # The machine's own Debian mirror: first URIs: line of a deb822 source, else a
  # one-line sources.list entry; never a hard-coded host.
  local uri
  uri=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  if [[ -z $uri ]]; then
    uri=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' \
          | grep -v -- '-security' | head -n1 || true)
  fi
  [[ -n $uri ]] || { log "no Debian mirror found in this host's apt sources"; exit 1; }
  echo "$uri"
}

base_image() {
  # Prints the image to build FROM for a suite.
  local suite=$1 own="${project_tag}/base:$1"
  if docker image inspect "debian:${suite}" >/dev/null 2>&1; then
    echo "debian:${suite}"; return
  fi
  if docker image inspect "$own" >/dev/null 2>&1; then
    echo "$own"; return
  fi
  if [[ ${TASKSTACK_NO_PULL:-0} != 1 ]] && timeout 60 docker pull -q "debian:${suite}" >/dev/null 2>&1; then
    echo "debian:${suite}"; return
  fi
  log "no registry answers: building ${own} from Debian's archive with debootstrap"
  if ! command -v debootstrap >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
      log "debootstrap is missing: install it (apt-get install debootstrap) and re-run"
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  local mirror rootfs
  mirror=$(apt_mirror)
  rootfs=$(mktemp -d /var/tmp/taskstack-rootfs.XXXXXX)
  # shellcheck disable=SC2064
  trap "rm -rf '$rootfs'" RETURN
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/dev/null
  tar -C "$rootfs" -c . | docker import - "$own" >/dev/null
  echo "$own"
}

build_one() {
  local distro=$1 suite base tag inputs_hash current
  suite=$(suite_of "$distro")
  tag="${project_tag}/test:${distro}"
  base=$(base_image "$suite")
  inputs_hash=$( { cat "$here/Dockerfile"; echo "$role_packages";
                   docker image inspect --format '{{.Id}}' "$base"; } | sha256sum | cut -c1-16)
  current=$(docker image inspect --format '{{index .Config.Labels "taskstack.inputs"}}' "$tag" 2>/dev/null || true)
  if [[ $current == "$inputs_hash" ]]; then
    log "$tag is up to date (inputs $inputs_hash), reused"
    return
  fi
  log "building $tag FROM $base"
  docker build -q --network host \
    --build-arg "BASE=$base" --build-arg "ROLE_PACKAGES=$role_packages" \
    --label "taskstack.inputs=$inputs_hash" -t "$tag" "$here" \
    2> >(grep -vE 'DEPRECATED: The legacy builder|Install the buildx|docs.docker.com/go/buildx|^$' >&2) >/dev/null
  # The image this one replaced, if any, is now dangling: drop it.
  docker image prune -f --filter "label=taskstack.inputs" >/dev/null
  log "built $tag"
}

distros=("$@")
[[ ${#distros[@]} -gt 0 ]] || distros=(debian12 debian13)
for d in "${distros[@]}"; do
  start=$SECONDS
  build_one "$d"
  log "$d: $((SECONDS - start)) s"
done
