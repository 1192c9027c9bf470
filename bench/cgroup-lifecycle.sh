#!/bin/bash
# Lifecycle benchmark, cgroup step: `run /bin/true` with memory, cpu and pids limits set, skiff vs
# crun vs runc, interleaved in one run. Prints the mean and median wall time per run.
#
# Usage: bench/cgroup-lifecycle.sh [RUNS]       (as root; RUNS defaults to 50)
# Env:   SKIFF (default target/release/skiff), RUNTIMES (default "skiff crun runc"),
#        SETTLE (seconds of quiet before each run, default 0.1; 0 measures back-to-back runs).
#
# crun 1.8 refuses this host's hybrid layout, so every runtime runs in one private mount namespace
# in which the cgroup2 mount is lazily unmounted (v1 controllers only); the host's mounts stay as
# they are.
set -euo pipefail

runs=${1:-50}
repo=$(cd "$(dirname "$0")/.." && pwd)
skiff=${SKIFF:-$repo/target/release/skiff}
runtimes=${RUNTIMES:-skiff crun runc}

if [ -z "${SKIFF_BENCH_INNER:-}" ]; then
    work=$(mktemp -d /tmp/skiff-bench-XXXXXX)
    trap 'rm -rf "$work"' EXIT
    mkdir -p "$work/bundle/rootfs/bin"
    cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
    ln -s busybox "$work/bundle/rootfs/bin/true"
    (cd "$work/bundle" && runc spec)
    python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
c["linux"]["resources"].update({
    "memory": {"limit": 64 << 20},
    "cpu": {"shares": 512, "quota": 50000, "period": 100000},
    "pids": {"limit": 64},
})
json.dump(c, open(p, "w"))
PY
    SKIFF_BENCH_INNER=1 SKIFF="$skiff" RUNTIMES="$runtimes" SETTLE="${SETTLE:-0.1}" \
        unshare -m --propagation private "$0" "$runs" "$work"
    exit $?
fi

work=$2
if mountpoint -q /sys/fs/cgroup/unified; then umount -l /sys/fs/cgroup/unified; fi
declare -A bin=([skiff]=$skiff [crun]=crun [runc]=runc)
for rt in $runtimes; do : >"$work/times-$rt"; done
# The first cgroup migration after ~50 ms without one waits for an RCU grace period (5-15 ms
# here); a run that follows another runtime's closely skips it. Each run therefore starts after
# `settle` seconds of quiet, and the order rotates every round.
settle=${SETTLE:-0.1}
read -r -a order <<<"$runtimes"
for i in $(seq 1 "$runs"); do
    k=$((i % ${#order[@]}))
    for rt in "${order[@]:k}" "${order[@]:0:k}"; do
        sleep "$settle"
        id="bench-$rt-$i"
        t0=$EPOCHREALTIME
        "${bin[$rt]}" --root "$work/state-$rt" run -b "$work/bundle" "$id" >/dev/null
        t1=$EPOCHREALTIME
        echo "$t0 $t1" | awk '{printf "%.3f\n", ($2 - $1) * 1000}' >>"$work/times-$rt"
        "${bin[$rt]}" --root "$work/state-$rt" delete -f "$id" >/dev/null 2>&1 || true
    done
done
printf "%-6s %8s %8s %8s  (ms per run /bin/true with memory+cpu+pids limits, %s runs)\n" \
    runtime mean median min "$runs"
for rt in $runtimes; do
    sort -n "$work/times-$rt" | awk -v rt="$rt" '
        { v[NR] = $1; s += $1 }
        END { printf "%-6s %8.2f %8.2f %8.2f\n", rt, s / NR, v[int((NR + 1) / 2)], v[1] }'
done
