#!/usr/bin/env bash
# Every node of the lab: the base a kubeadm node needs. Runs as root in the guest; idempotent.
#
#   NODE_NAME    this node's name (cp, w1, w2, …): its hostname and its Node's name
#   NODE_IP      its address on the lab's host-only network (192.168.56.x), not the NAT one
#   LAB_HOSTS    every node, "cp=192.168.56.10 w1=192.168.56.11 …", written to /etc/hosts
#   K8S_VERSION  Kubernetes release (default v1.28.7)
#   K8S_BIN_DIR  optional: a directory holding kubeadm, kubelet, kubectl and crictl to install instead of
#                downloading them (the qemu lab shares its unpacked Kubernetes binaries there)
#
# It turns swap off (and out of /etc/fstab), loads br_netfilter and overlay (and at boot), turns on IP forwarding
# and bridged traffic through iptables, installs the Debian packages below that are missing (none are fetched when
# all are present: the qemu lab's root filesystem has them and no internet), and installs kubeadm, kubelet, kubectl
# (official release binaries from dl.k8s.io, sha256-checked) and crictl (cri-tools from GitHub, sha256-checked)
# into /usr/local/bin. The kubelet is installed as /usr/local/bin/kubelet-upstream: control-plane.sh runs it,
# worker.sh runs skiffd in its place.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

: "${NODE_NAME:?NODE_NAME is not set (cp, w1, …)}"
: "${NODE_IP:?NODE_IP is not set (the address of this node on the lab network)}"
: "${LAB_HOSTS:?LAB_HOSTS is not set (\"cp=192.168.56.10 w1=192.168.56.11 …\")}"
K8S_VERSION=${K8S_VERSION:-v1.28.7}
CRI_TOOLS_VERSION=${CRI_TOOLS_VERSION:-v1.28.0}
[[ $K8S_VERSION == v* ]] || fail "K8S_VERSION=$K8S_VERSION: expected a release like v1.28.7"
need_root

# What kubeadm's preflight runs (conntrack, ip, iptables, mount, nsenter, ethtool, socat, tc) and what the
# provisioning itself uses (curl, ca-certificates). The qemu lab preinstalls these in its root filesystem.
PACKAGES=(ca-certificates curl conntrack iptables iproute2 ethtool socat util-linux mount kmod procps)

hostname_and_hosts() {
    if [[ $(hostname) != "$NODE_NAME" ]]; then
        echo "$NODE_NAME" >/etc/hostname
        hostname "$NODE_NAME"
    fi
    # One managed block in /etc/hosts; Vagrant boxes map the hostname to 127.0.1.1, which would make the
    # node's own name resolve to loopback: that line goes.
    local block="" pair
    for pair in $LAB_HOSTS; do
        [[ $pair == *=* ]] || fail "LAB_HOSTS: '$pair' is not name=ip"
        block+="${pair#*=} ${pair%%=*}"$'\n'
    done
    local tmp
    tmp=$(mktemp /etc/hosts.XXXXXX)
    sed -e '/^# skiff lab begin$/,/^# skiff lab end$/d' -e "/^127\.0\.1\.1[[:space:]].*\b$NODE_NAME\b/d" /etc/hosts >"$tmp"
    printf '# skiff lab begin\n%s# skiff lab end\n' "$block" >>"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" /etc/hosts
}

swap_off() {
    swapoff -a
    # Comment out swap entries so a reboot keeps it off (the kubelet and skiffd refuse to start with swap on).
    if grep -Eq '^[^#].*[[:space:]]swap[[:space:]]' /etc/fstab; then
        sed -i.skiff-lab -E 's|^([^#].*[[:space:]]swap[[:space:]].*)$|# \1  # off for Kubernetes|' /etc/fstab
    fi
    # Debian's cloud images may swap through systemd units of their own.
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        systemctl list-units --type=swap --no-legend --plain 2>/dev/null | awk '{print $1}' |
            while read -r unit; do systemctl mask --now "$unit" >/dev/null 2>&1 || true; done
    fi
}

kernel() {
    printf 'overlay\nbr_netfilter\n' >/etc/modules-load.d/k8s-lab.conf
    local m
    for m in overlay br_netfilter; do
        modprobe "$m" 2>/dev/null || [[ -d /sys/module/$m ]] || fail "cannot load kernel module $m"
    done
    printf 'net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\n' \
        >/etc/sysctl.d/90-k8s-lab.conf
    sysctl -q -p /etc/sysctl.d/90-k8s-lab.conf
}

arch() {
    case $(uname -m) in
    x86_64) echo amd64 ;;
    aarch64) echo arm64 ;;
    *) fail "no Kubernetes release for $(uname -m)" ;;
    esac
}

download_checked() { # URL SHA256URL DEST: the file, checked against the hash published beside it
    local sum
    curl -fsSL --retry 3 -o "$3" "$1" || fail "cannot download $1"
    sum=$(curl -fsSL --retry 3 "$2" | cut -d' ' -f1) || fail "cannot download $2"
    echo "$sum  $3" | sha256sum --check --quiet || fail "$1: sha256 mismatch"
}

kubernetes_binaries() {
    local n have
    if [[ -n ${K8S_BIN_DIR:-} ]]; then
        [[ -d $K8S_BIN_DIR ]] || fail "K8S_BIN_DIR=$K8S_BIN_DIR is not a directory"
        for n in kubeadm kubelet crictl; do
            [[ -x $K8S_BIN_DIR/$n ]] || fail "K8S_BIN_DIR=$K8S_BIN_DIR has no $n"
        done
        install_bin "$K8S_BIN_DIR/kubeadm" /usr/local/bin/kubeadm
        install_bin "$K8S_BIN_DIR/kubelet" /usr/local/bin/kubelet-upstream
        install_bin "$K8S_BIN_DIR/crictl" /usr/local/bin/crictl
        if [[ -x $K8S_BIN_DIR/kubectl ]]; then
            install_bin "$K8S_BIN_DIR/kubectl" /usr/local/bin/kubectl
        else
            say "K8S_BIN_DIR=$K8S_BIN_DIR has no kubectl: none installed on $NODE_NAME"
        fi
        return
    fi
    local a tmp
    a=$(arch)
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: tmp is local
    trap "rm -rf '$tmp'" RETURN
    for n in kubeadm kubelet kubectl; do
        local dest=$n
        [[ $n == kubelet ]] && dest=kubelet-upstream
        have=$("/usr/local/bin/$dest" --version 2>/dev/null || true)
        [[ $n == kubectl ]] && have=$("/usr/local/bin/kubectl" version --client 2>/dev/null | head -n1 || true)
        if [[ $have == *"$K8S_VERSION"* ]]; then continue; fi
        say "downloading $n $K8S_VERSION"
        local url="https://dl.k8s.io/release/$K8S_VERSION/bin/linux/$a/$n"
        download_checked "$url" "$url.sha256" "$tmp/$n"
        install_bin "$tmp/$n" /usr/local/bin/"$dest"
    done
    if [[ $(/usr/local/bin/crictl --version 2>/dev/null) != *"$CRI_TOOLS_VERSION"* ]]; then
        say "downloading crictl $CRI_TOOLS_VERSION"
        local tgz="crictl-$CRI_TOOLS_VERSION-linux-$a.tar.gz"
        local url="https://github.com/kubernetes-sigs/cri-tools/releases/download/$CRI_TOOLS_VERSION/$tgz"
        download_checked "$url" "$url.sha256" "$tmp/$tgz"
        tar -xzf "$tmp/$tgz" -C "$tmp" crictl
        install_bin "$tmp/crictl" /usr/local/bin/crictl
    fi
}

hostname_and_hosts
swap_off
kernel
install_packages "${PACKAGES[@]}"
kubernetes_binaries
say "ready: $NODE_NAME at $NODE_IP, kubeadm $(/usr/local/bin/kubeadm version -o short)"
