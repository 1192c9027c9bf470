#!/usr/bin/env bash
# Make an OCI bundle at DIR: a busybox rootfs plus a config.json running `sh`.
# The config comes from `spec` of the runtime in $SKIFF_BIN (default: target/debug/skiff,
# then skiff or runc on PATH), adjusted to run without a terminal.
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

"$here/busybox-rootfs.sh" "$dir/rootfs"

if [ -f "$dir/config.json" ]; then
    exit 0
fi

runtime=${SKIFF_BIN:-}
if [ -z "$runtime" ]; then
    for candidate in "$repo/target/release/skiff" "$repo/target/debug/skiff" \
        "$(command -v skiff || true)" "$(command -v runc || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then runtime=$candidate; break; fi
    done
fi
[ -n "$runtime" ] || { echo "$0: no runtime found to generate config.json; set SKIFF_BIN" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$runtime" spec --bundle "$tmp"
# Without a terminal the container can print to the caller's stdout directly.
sed -e 's/"terminal": *true/"terminal": false/' \
    -e 's/"readonly": *true/"readonly": false/' "$tmp/config.json" > "$dir/config.json"
