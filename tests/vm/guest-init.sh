#!/bin/sh
# /init of the cgroup v2 test guest. Stage one moves the root from the initramfs onto a tmpfs
# (pivot_root cannot leave an initramfs); stage two mounts the essentials and runs the suite.
export PATH=/bin

if [ "${SKIFF_STAGE:-1}" = 1 ]; then
    mount -t tmpfs -o size=512m tmpfs /mnt
    for d in bin modules init; do cp -a "/$d" /mnt/; done
    mkdir -p /mnt/proc /mnt/sys /mnt/dev /mnt/tmp /mnt/share /mnt/run
    export SKIFF_STAGE=2
    exec switch_root /mnt /init
fi

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount --make-rshared /
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci netfs fscache \
    9pnet 9pnet_virtio 9p; do
    insmod "/modules/$m.ko" 2>/dev/null
done
sleep 0.2
mount -t 9p -o trans=virtio,version=9p2000.L skiff /share || echo "guest: 9p mount failed"

echo "SKIFF-VM-BEGIN kernel $(uname -r), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
if grep -q ' cgroup ' /proc/mounts; then
    echo "guest: a cgroup v1 hierarchy is mounted"
fi
# The share is read-only to the suite: run copies from the tmpfs.
cp /share/skiff /share/cgroups-test /bin/
SKIFF_BIN=/bin/skiff RUST_BACKTRACE=1 /bin/cgroups-test --test-threads=2 $(cat /share/filter) 2>&1
rc=$?
echo "SKIFF-VM-RESULT $rc"
sync
reboot -f
