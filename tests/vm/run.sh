#!/bin/sh
# Runs the cgroup test suite in a pure cgroup v2 guest: Debian's kernel under qemu (TCG), booted
# with cgroup_no_v1=all from a busybox initramfs; the static test binaries come in over 9p.
#
# Usage: tests/vm/run.sh [test-name-filter...]    (as root; exits with the guest suite's status)
# Needs: qemu-system-x86 busybox-static cpio (apt), and network access to the Debian archive once,
# to fetch linux-image-amd64's kernel with `apt-get download` (unpacked, never installed).
# Env: SKIFF_VM_WORK (cache dir, default target/vm), SKIFF_VM_TIMEOUT (seconds, default 900).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=${SKIFF_VM_WORK:-$repo/target/vm}
limit=${SKIFF_VM_TIMEOUT:-900}
triple=x86_64-unknown-linux-gnu
mkdir -p "$work"

for tool in qemu-system-x86_64 cpio /bin/busybox; do
    command -v "$tool" >/dev/null || {
        echo "vm: $tool missing (apt-get install -y qemu-system-x86 cpio busybox-static)" >&2
        exit 2
    }
done

# The kernel: the versioned image package linux-image-amd64 points at, unpacked.
kernel=$(ls "$work"/kernel/boot/vmlinuz-* 2>/dev/null | head -n1 || true)
if [ -z "$kernel" ]; then
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    [ -n "$pkg" ] || { echo "vm: cannot resolve linux-image-amd64 (apt-get update?)" >&2; exit 2; }
    (cd "$work" && rm -f linux-image-*.deb && apt-get download "$pkg" && dpkg-deb -x linux-image-*.deb kernel)
    kernel=$(ls "$work"/kernel/boot/vmlinuz-* | head -n1)
fi
moddir=$(ls -d "$work"/kernel/lib/modules/*/kernel)

# Static binaries, built apart from the normal target dir so both stay incremental.
export RUSTFLAGS="-C target-feature=+crt-static"
cd "$repo"
cargo build -q -p skiff-runtime --bin skiff --target $triple --target-dir "$work/target"
testbin=$(cargo test -q -p skiff-runtime --test cgroups --no-run --target $triple \
    --target-dir "$work/target" --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*cgroups-[^"]*\)".*/\1/p' | tail -n1)
[ -x "$testbin" ] || { echo "vm: test binary not found" >&2; exit 2; }

share="$work/share"
rm -rf "$share" && mkdir -p "$share"
cp "$work/target/$triple/debug/skiff" "$share/skiff"
cp "$testbin" "$share/cgroups-test"
echo "$*" >"$share/filter"

# The initramfs: busybox, the 9p modules, and the guest script as /init.
initrd="$work/initramfs"
rm -rf "$initrd" && mkdir -p "$initrd/bin" "$initrd/modules" "$initrd/mnt" "$initrd/proc" "$initrd/sys" "$initrd/dev"
cp /bin/busybox "$initrd/bin/busybox"
for a in $(/bin/busybox --list); do
    [ "$a" = busybox ] || ln -sf busybox "$initrd/bin/$a"
done
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
    drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci fs/netfs/netfs \
    fs/fscache/fscache net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p; do
    cp "$moddir/$m.ko" "$initrd/modules/"
done
cp "$here/guest-init.sh" "$initrd/init"
chmod +x "$initrd/init"
(cd "$initrd" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initramfs.cpio.gz"

log="$work/console.log"
echo "vm: booting $(basename "$kernel") (TCG), log in $log"
set +e
timeout "$limit" qemu-system-x86_64 -m 1024 -smp 2 -nographic -no-reboot \
    -kernel "$kernel" -initrd "$work/initramfs.cpio.gz" \
    -append "console=ttyS0 cgroup_no_v1=all panic=-1 quiet" \
    -virtfs "local,path=$share,mount_tag=skiff,security_model=none,id=skiff" \
    </dev/null >"$log" 2>&1
qrc=$?
set -e
tr -d '\r' <"$log" >"$log.txt"
sed -n 's/.*\(SKIFF-VM-BEGIN\)/\1/; /SKIFF-VM-BEGIN/,/^SKIFF-VM-RESULT/p' "$log.txt"
result=$(sed -n 's/^SKIFF-VM-RESULT \([0-9]*\).*/\1/p' "$log.txt" | tail -n1)
if [ -z "$result" ]; then
    echo "vm: no result from the guest (qemu exit $qrc); console:" >&2
    tail -n 40 "$log" >&2
    exit 1
fi
exit "$result"
