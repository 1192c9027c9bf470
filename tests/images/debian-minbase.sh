#!/bin/sh
# Build a Debian `--variant=minbase` root filesystem with debootstrap from the apt mirror this
# machine already uses, and pack it with umoci into an OCI layout (tag "minbase", two layers:
# the tree without /usr, then /usr). Both are cached: built once per machine.
#
# Usage: debian-minbase.sh CACHE_DIR
#   CACHE_DIR/rootfs   the debootstrapped tree (the source of truth for comparisons)
#   CACHE_DIR/layout   the OCI layout
set -eu
cache=$1
mkdir -p "$cache"

# One builder at a time; later callers find the finished cache.
exec 9>"$cache/.lock"
flock 9

. /etc/os-release
suite=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}

# The first configured mirror serving the release suite itself (not -updates or -security).
mirror() {
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == s) { print $i; exit } }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        # deb822 stanzas are separated by blank lines.
        awk -v s="$suite" 'BEGIN { RS = "" } {
            uri = ""; ok = 0; deb = 0
            n = split($0, lines, "\n")
            for (j = 1; j <= n; j++) {
                split(lines[j], kv, ":[ \t]*")
                if (kv[1] == "URIs") { sub(/^URIs:[ \t]*/, "", lines[j]); split(lines[j], u, " "); uri = u[1] }
                if (kv[1] == "Types" && lines[j] ~ /(^|[ \t])deb([ \t]|$)/) deb = 1
                if (kv[1] == "Suites") { m = split(lines[j], ss, "[ \t]+"); for (k = 2; k <= m; k++) if (ss[k] == s) ok = 1 }
            }
            if (ok && deb && uri != "") { print uri; exit }
        }' "$f"
    done
}

# Layer tars carry whole seconds (umoci rounds to the nearest one): truncate the tree's mtimes
# so that it and every image built from it agree.
whole_seconds() {
    python3 - "$1" <<'PY'
import os, sys
for top, dirs, files in os.walk(sys.argv[1]):
    for p in [top] + [os.path.join(top, n) for n in dirs + files]:
        st = os.lstat(p)
        s = st.st_mtime_ns // 10**9 * 10**9
        os.utime(p, ns=(s, s), follow_symlinks=False)
PY
}

if [ ! -e "$cache/rootfs.complete" ]; then
    url=$(mirror | head -n1)
    [ -n "$url" ] || { echo "debian-minbase.sh: no apt mirror for $suite in /etc/apt" >&2; exit 1; }
    command -v debootstrap >/dev/null || { echo "debian-minbase.sh: apt-get install debootstrap" >&2; exit 1; }
    rm -rf "$cache/rootfs.tmp" "$cache/rootfs" "$cache/layout" "$cache/layout.complete"
    debootstrap --variant=minbase "$suite" "$cache/rootfs.tmp" "$url" >"$cache/debootstrap.log" 2>&1 || {
        tail -n 30 "$cache/debootstrap.log" >&2
        exit 1
    }
    # Nothing of the build machine's runtime state belongs in the image.
    rm -rf "$cache/rootfs.tmp/var/cache/apt/archives/"*.deb
    whole_seconds "$cache/rootfs.tmp"
    mv "$cache/rootfs.tmp" "$cache/rootfs"
    touch "$cache/rootfs.complete"
fi

if [ ! -e "$cache/layout.complete" ]; then
    rm -rf "$cache/layout" "$cache/parts"
    # Layer one: everything but /usr's contents; layer two: /usr.
    mkdir -p "$cache/parts"
    cp -a "$cache/rootfs" "$cache/parts/base"
    find "$cache/parts/base/usr" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    umoci init --layout "$cache/layout"
    umoci new --image "$cache/layout:minbase"
    umoci config --image "$cache/layout:minbase" --config.cmd /bin/bash \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    umoci insert --image "$cache/layout:minbase" "$cache/parts/base" /
    umoci insert --image "$cache/layout:minbase" "$cache/rootfs/usr" /usr
    rm -rf "$cache/parts"
    touch "$cache/layout.complete"
fi
