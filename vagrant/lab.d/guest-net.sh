#!/bin/sh
# Runs at boot in every lab guest: takes the guest's name and address from the kernel command line, so one root
# image serves every node. lab.name=NAME lab.ip=A.B.C.D/NN lab.gw=A.B.C.D
set -eu
name='' ip='' gw=''
# shellcheck disable=SC2013 # the command line is one line of words
for w in $(cat /proc/cmdline); do
    case $w in
    lab.name=*) name=${w#lab.name=} ;;
    lab.ip=*) ip=${w#lab.ip=} ;;
    lab.gw=*) gw=${w#lab.gw=} ;;
    esac
done
if [ -z "$name" ] || [ -z "$ip" ]; then echo "lab-guest-net: no lab.name/lab.ip on the command line" >&2; exit 1; fi
hostname "$name"
echo "$name" >/etc/hostname
grep -q " $name\$" /etc/hosts || echo "${ip%/*} $name" >>/etc/hosts
ip link set lo up
dev=''
for d in /sys/class/net/*; do
    [ "${d##*/}" = lo ] || { dev=${d##*/}; break; }
done
ip link set "$dev" up
ip addr replace "$ip" dev "$dev"
[ -z "$gw" ] || ip route replace default via "$gw" dev "$dev"
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -A
# The repo (read-only) at /vagrant and the lab's state (writable: the key, binaries, join command) at /lab.
modprobe -a 9pnet_virtio 9p
mkdir -p /vagrant /lab
mountpoint -q /vagrant || mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 vagrant /vagrant
mountpoint -q /lab || mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 lab /lab
install -d -m 0700 /root/.ssh
install -m 0600 /lab/authorized_keys /root/.ssh/authorized_keys
