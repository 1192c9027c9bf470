#!/usr/bin/env bash
# Builds the lab guests' root filesystem once and caches it: a Debian bookworm tree made with debootstrap, holding
# everything the provision scripts would otherwise fetch (the guests have no internet), Debian's kernel and an
# initramfs that mounts a virtio disk, packed as an ext4 image that every guest boots through its own qcow2 overlay.
#
# Usage: rootfs.sh CACHE_DIR      prints the directory holding rootfs.img, vmlinuz and initrd.img
# The cache key is the package list, the guest's boot script and FORMAT: change one and a new image is built.
set -euo pipefail
cache=$1
here=$(cd "$(dirname "$0")" && pwd)

# What vagrant/provision/*.sh install with apt-get when it is missing, and what the nodes run.
packages=(systemd systemd-sysv dbus udev kmod openssh-server sudo iproute2 iputils-ping procps util-linux mount
    ca-certificates curl openssl containerd runc containernetworking-plugins iptables conntrack socat ethtool
    ebtables linux-image-amd64 initramfs-tools zstd)
# Raised when the way the image is put together changes.
FORMAT=1

key=$( { printf '%s\n' "${packages[@]}" "$FORMAT"; cat "$here/guest-net.sh"; } | sha256sum | cut -c1-16)
out=$cache/rootfs-$key
if [ -f "$out/rootfs.img" ]; then
    echo "$out"
    exit 0
fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
[ -f "$out/rootfs.img" ] && { echo "$out"; exit 0; }

# shellcheck source=/dev/null
. /etc/os-release
mirror=${SKIFF_LAB_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
include=$(IFS=,; echo "${packages[*]}")
echo "lab: debootstrap $VERSION_CODENAME into $root (once; cached in $out)" >&2
debootstrap --variant=minbase --include="$include" "$VERSION_CODENAME" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# Guests are told who they are on the kernel command line (lab.name=, lab.ip=, lab.gw=): one image serves all.
install -m 0755 "$here/guest-net.sh" "$root/usr/local/sbin/lab-guest-net"
cat >"$root/etc/systemd/system/lab-guest-net.service" <<'UNIT'
[Unit]
Description=Lab guest identity and network from the kernel command line
DefaultDependencies=no
Before=network.target ssh.service
Wants=network.target
After=systemd-udevd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/lab-guest-net

[Install]
WantedBy=multi-user.target
UNIT
chroot "$root" systemctl enable lab-guest-net.service >/dev/null 2>&1
chroot "$root" systemctl enable ssh.service >/dev/null 2>&1 || true
# No getty on the tty the console log is taken from; the serial console is only for the log.
chroot "$root" systemctl mask serial-getty@ttyS0.service getty@tty1.service systemd-timesyncd.service \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service >/dev/null 2>&1 || true
chroot "$root" useradd -m -s /bin/bash -G sudo vagrant
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$root/etc/sudoers.d/vagrant"
echo 'PermitRootLogin prohibit-password' >"$root/etc/ssh/sshd_config.d/lab.conf"
echo 'UseDNS no' >>"$root/etc/ssh/sshd_config.d/lab.conf"
printf '/dev/vda / ext4 defaults 0 1\n' >"$root/etc/fstab"
mkdir -p "$root/vagrant" "$root/lab"
# The initramfs must find the root disk: virtio block and ext4 with their dependencies.
printf 'virtio_pci\nvirtio_blk\next4\n' >>"$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u >/dev/null 2>&1
# Host keys are made at first boot per guest (ssh-keygen -A in lab-guest-net), never shared by the image.
rm -f "$root"/etc/ssh/ssh_host_*
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
mkdir -p "$work/out"
kernels=("$root"/boot/vmlinuz-*)
initrds=("$root"/boot/initrd.img-*)
cp "${kernels[0]}" "$work/out/vmlinuz"
cp "${initrds[0]}" "$work/out/initrd.img"
mkfs.ext4 -q -L lab-root -d "$root" "$work/out/rootfs.img" 6G
rm -rf "$out"
mv "$work/out" "$out"
echo "$out"
