#!/usr/bin/env bash
# What durability costs: redis-benchmark LPUSH with 1 KB values, unpipelined and pipelined,
# against three Redis servers started one after another on this machine's loopback:
#   off       no AOF, no snapshots (what a broker must never run)
#   everysec  the redis role's defaults (AOF fsync every second + RDB save rules)
#   always    the same with appendfsync always (no acknowledged write lost on power loss)
# and prints requests/s and the ratios to "off". A benchmark, not a test: numbers depend on
# the disk (fsync) and the CPU; compare them within one run only.
#
#   usage: benchmarks/redis_persistence.sh            (root installs redis-server/redis-tools
#                                                       from the distribution when missing)
#   env:   BENCH_REQUESTS (default 50000, unpipelined), BENCH_PIPELINED_REQUESTS (200000),
#          BENCH_CLIENTS (50), BENCH_PIPELINE (16), BENCH_DIR (data, default /var/tmp/...),
#          BENCH_PORT (first of three ports, default 6400)
set -euo pipefail

requests=${BENCH_REQUESTS:-50000}
pipelined_requests=${BENCH_PIPELINED_REQUESTS:-200000}
clients=${BENCH_CLIENTS:-50}
pipeline=${BENCH_PIPELINE:-16}
port=${BENCH_PORT:-6400}
dir=${BENCH_DIR:-/var/tmp/taskstack-redis-bench}

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "redis-server and redis-benchmark are needed: apt-get install redis-server redis-tools" >&2
    exit 1
  fi
  # policy-rc.d: the package must not start (and hold port 6379 with) its own server here.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server redis-tools >/dev/null
  rm -f /usr/sbin/policy-rc.d
  trap - EXIT
fi

declare -A settings=(
  [off]='--appendonly no --save ""'
  [everysec]='--appendonly yes --appendfsync everysec --save "900 1 300 10 60 10000"'
  [always]='--appendonly yes --appendfsync always --save "900 1 300 10 60 10000"'
)
modes=(off everysec always)
declare -A rps

current_pid=""
cleanup() {
  if [[ -n $current_pid ]]; then kill "$current_pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT

mkdir -p "$dir"
echo "redis: $(redis-server --version | awk '{print $3}'); data dir $dir on $(stat -f -c %T "$dir")" \
  "($(df -P "$dir" | awk 'NR==2 {print $1}')); $(nproc) CPUs; LPUSH 1 KB, $clients clients"

i=0
for mode in "${modes[@]}"; do
  p=$((port + i)); i=$((i + 1))
  rm -rf "${dir:?}/$mode"; mkdir -p "$dir/$mode"
  eval "redis-server --port $p --bind 127.0.0.1 --dir $dir/$mode --daemonize yes \
    --pidfile $dir/$mode.pid --logfile $dir/$mode.log ${settings[$mode]}"
  for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
  current_pid=$(cat "$dir/$mode.pid")
  for pl in 1 "$pipeline"; do
    n=$requests; [[ $pl -gt 1 ]] && n=$pipelined_requests
    redis-cli -p "$p" flushall >/dev/null
    # --csv: "test","rps",...; the LPUSH line's second field is requests per second.
    rps[$mode,$pl]=$(redis-benchmark -p "$p" -t lpush -d 1024 -c "$clients" -n "$n" -P "$pl" --csv \
      | awk -F'","' '/^"LPUSH/ {print int($2)}')
  done
  redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
  current_pid=""
done

printf '\n%-10s %16s %16s %12s %12s\n' "mode" "rps (-P 1)" "rps (-P $pipeline)" "vs off P1" "vs off P$pipeline"
for mode in "${modes[@]}"; do
  printf '%-10s %16s %16s %12s %12s\n' "$mode" "${rps[$mode,1]}" "${rps[$mode,$pipeline]}" \
    "$(awk -v a="${rps[$mode,1]}" -v b="${rps[off,1]}" 'BEGIN {printf "%.2f", a / b}')" \
    "$(awk -v a="${rps[$mode,$pipeline]}" -v b="${rps[off,$pipeline]}" 'BEGIN {printf "%.2f", a / b}')"
done
printf '\nalways vs everysec: %s (unpipelined), %s (pipelined)\n' \
  "$(awk -v a="${rps[always,1]}" -v b="${rps[everysec,1]}" 'BEGIN {printf "%.2f", a / b}')" \
  "$(awk -v a="${rps[always,$pipeline]}" -v b="${rps[everysec,$pipeline]}" 'BEGIN {printf "%.2f", a / b}')"
