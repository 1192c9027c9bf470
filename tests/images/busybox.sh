#!/bin/sh
# Build a busybox-static image with umoci: a source tree with the busybox binary, applet
# symlinks, a hardlink, a setuid file, owners, an xattr and a fifo, inserted as one layer.
# Usage: busybox.sh LAYOUT_DIR SOURCE_DIR TAG
set -eu
layout=$1 src=$2 tag=$3
mkdir -p "$src/bin" "$src/etc" "$src/tmp" "$src/home/user" "$src/usr/sbin"
cp /bin/busybox "$src/bin/busybox"
for applet in sh ls cat echo true; do ln -sf busybox "$src/bin/$applet"; done
ln "$src/bin/busybox" "$src/usr/sbin/busybox-hard"
printf 'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n' > "$src/etc/passwd"
printf 'secret\n' > "$src/etc/shadow"; chmod 0640 "$src/etc/shadow"; chown 0:42 "$src/etc/shadow"
printf 'suid\n' > "$src/bin/suid-tool"; chmod 4755 "$src/bin/suid-tool"
chmod 1777 "$src/tmp"
chown 1000:1000 "$src/home/user"; chmod 0700 "$src/home/user"
printf 'hello\n' > "$src/home/user/notes"; chown 1000:1000 "$src/home/user/notes"
setfattr -n user.skiff.test -v layered "$src/etc/passwd" 2>/dev/null \
  || python3 -c "import os,sys; os.setxattr(sys.argv[1], 'user.skiff.test', b'layered')" "$src/etc/passwd"
mkfifo "$src/tmp/fifo"
ln -s /etc/passwd "$src/etc/passwd-link"
# Whole-second mtimes: tar headers carry seconds only.
find "$src" -exec touch -h -d @1700000000 {} +
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci config --image "$layout:$tag" --config.entrypoint /bin/sh --config.cmd=-c --config.cmd='echo hi' \
  --config.env PATH=/bin:/usr/sbin --config.workingdir /home/user --config.user 1000:1000 \
  --config.exposedports 8080/tcp --config.volume /data
umoci insert --image "$layout:$tag" "$src" /
