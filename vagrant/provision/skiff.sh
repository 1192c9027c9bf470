#!/usr/bin/env bash
# Installs skiff as this node's kubelet and container runtime (worker.sh, and control-plane.sh with SKIFF_ON_CP=1).
# Runs as root in the guest after common.sh; idempotent.
#
#   NODE_NAME, NODE_IP  as for common.sh; NODE_IP becomes skiffd's --node-ip (/etc/default/kubelet, where kubeadm's
#                       drop-in reads KUBELET_EXTRA_ARGS), so the Node reports the lab address, not the NAT one
#   SKIFF_BIN_DIR       optional: a directory with prebuilt skiff, skiffd, skiff-monitor and skiff-bridge (the qemu
#                       lab builds them on its host); else the repository is built here with a rustup toolchain
#                       (cargo build --release, into /opt/skiff-build: the synced repository is left untouched)
#   REGISTRY_MIRROR     optional host:port of a plain-HTTP registry that serves docker.io and registry.k8s.io
#                       (/etc/skiff/registries.toml)
#
# The install itself is the repository's scripts/install-node: skiffd as /usr/bin/kubelet, kubelet.service with
# kubeadm's drop-in, skiff-bridge in /opt/cni/bin.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"

: "${NODE_NAME:?NODE_NAME is not set}"
: "${NODE_IP:?NODE_IP is not set}"
need_root
[[ -x $repo/scripts/install-node ]] || fail "$repo/scripts/install-node is missing: is the repository synced to $repo?"

build() {
    local build=/opt/skiff-build
    install_packages gcc libc6-dev pkg-config
    export RUSTUP_HOME=$build/rustup CARGO_HOME=$build/cargo CARGO_TARGET_DIR=$build/target
    if [[ ! -x $CARGO_HOME/bin/cargo ]]; then
        say "installing a Rust toolchain with rustup into $build"
        mkdir -p "$build"
        curl -fsSL --retry 3 https://sh.rustup.rs | sh -s -- -y -q --profile minimal --no-modify-path ||
            fail "rustup failed: set SKIFF_BIN_DIR to prebuilt binaries instead"
    fi
    say "building skiff (cargo build --release; the first build takes several minutes)"
    (cd "$repo" && "$CARGO_HOME/bin/cargo" build --release --locked -q -p skiff-agent -p skiff-runtime -p skiff-cni) ||
        fail "cargo build failed"
    from=$CARGO_TARGET_DIR/release
}

from=${SKIFF_BIN_DIR:-}
[[ -n $from ]] || build
for b in skiff skiffd skiff-monitor skiff-bridge; do
    [[ -x $from/$b ]] || fail "$from/$b is missing (SKIFF_BIN_DIR must hold skiff, skiffd, skiff-monitor, skiff-bridge)"
done
"$repo/scripts/install-node" --from "$from" --no-build

# kubeadm's drop-in appends KUBELET_EXTRA_ARGS last: the node's own flags.
echo "KUBELET_EXTRA_ARGS=\"--node-ip=$NODE_IP\"" | write_file /etc/default/kubelet 0644

if [[ -n ${REGISTRY_MIRROR:-} ]]; then
    [[ $REGISTRY_MIRROR =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]] || fail "REGISTRY_MIRROR=$REGISTRY_MIRROR: expected host:port"
    mkdir -p /etc/skiff
    write_file /etc/skiff/registries.toml 0644 <<TOML
# Images of docker.io (busybox, nginx) and registry.k8s.io (kube-proxy, the control plane) come from the lab's
# registry, plain HTTP.
[registries."docker.io"]
mirrors = ["http://$REGISTRY_MIRROR"]

[registries."registry.k8s.io"]
mirrors = ["http://$REGISTRY_MIRROR"]
TOML
fi
say "skiffd installed as the kubelet of $NODE_NAME (--node-ip=$NODE_IP)"
