#!/bin/sh
# Build the plain busybox image the CRI tests run: every applet linked, root user, `sh` as command,
# like the busybox image of public registries.
# Usage: busybox-plain.sh LAYOUT_DIR TAG
set -eu
layout=$1 tag=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/proc" "$root/sys" "$root/dev" "$root/home/user"
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nuser:x:1000:\nextra:x:3000:user\nnogroup:x:65534:\n' > "$root/etc/group"
chown 1000:1000 "$root/home/user"
chmod 1777 "$root/tmp"
umoci init --layout "$layout" >/dev/null
umoci new --image "$layout:$tag" >/dev/null
umoci config --image "$layout:$tag" --config.cmd sh --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin >/dev/null
umoci insert --image "$layout:$tag" "$root" / >/dev/null
