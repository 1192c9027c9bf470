#!/usr/bin/env bash
# Build a minimal busybox root filesystem at DEST from Debian's busybox-static.
# Idempotent: a stamp file records what DEST was built from, so a second run is instant.
set -euo pipefail

usage() { echo "usage: $0 DEST" >&2; exit 2; }
[ $# -eq 1 ] || usage
dest=$1
busybox=${BUSYBOX:-/bin/busybox}

[ -x "$busybox" ] || { echo "$0: $busybox not found (apt-get install busybox-static)" >&2; exit 1; }
if ! "$busybox" --list-full >/dev/null 2>&1; then
    echo "$0: $busybox does not support --list-full" >&2; exit 1
fi
# A dynamically linked busybox would not run inside the rootfs.
if command -v file >/dev/null && file -L "$busybox" | grep -q 'dynamically linked'; then
    echo "$0: $busybox is dynamically linked; install busybox-static" >&2; exit 1
fi

script_sum=$(sha256sum "$0" | cut -d' ' -f1)
bb_sum=$(sha256sum "$busybox" | cut -d' ' -f1)
stamp_want="script=$script_sum busybox=$bb_sum"
stamp="$dest/.skiff-rootfs-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_want" ]; then
    exit 0
fi

# Build next to DEST, then swap it in, so a reader never sees a half-built tree.
parent=$(dirname "$dest")
mkdir -p "$parent"
work=$(mktemp -d "$parent/.rootfs-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

chmod 0755 "$work"  # mktemp made it 0700; non-root users must traverse /
mkdir -p "$work"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root,home/user,var,run,mnt,opt}
chmod 1777 "$work/tmp"
chmod 700 "$work/root"
install -m 0755 "$busybox" "$work/bin/busybox"

"$busybox" --list-full | while read -r applet; do
    [ -n "$applet" ] || continue
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$work/$(dirname "$applet")"
    ln -sf /bin/busybox "$work/$applet"
done
# Debian's busybox lists sh under bin/, make sure it is there whatever the list says.
[ -e "$work/bin/sh" ] || ln -s /bin/busybox "$work/bin/sh"

cat > "$work/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$work/etc/group" <<'GROUP'
root:x:0:
wheel:x:10:root
audio:x:29:user
user:x:1000:
nogroup:x:65534:
GROUP
echo skiff > "$work/etc/hostname"
: > "$work/etc/resolv.conf"
echo '127.0.0.1 localhost' > "$work/etc/hosts"
chown 1000:1000 "$work/home/user"

echo "$stamp_want" > "$work/.skiff-rootfs-stamp"

if [ -e "$dest" ]; then
    old="$parent/.rootfs-old.$$"
    mv "$dest" "$old"
    mv "$work" "$dest"
    rm -rf "$old"
else
    mv "$work" "$dest"
fi
trap - EXIT
