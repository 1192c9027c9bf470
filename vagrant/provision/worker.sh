#!/usr/bin/env bash
# A worker of the lab: skiff as its kubelet and container runtime, joined to the control plane with kubeadm.
# Runs as root in the guest after common.sh; idempotent (a node that has joined is left as it is).
#
#   NODE_NAME, NODE_IP   as for common.sh
#   SKIFF_BIN_DIR        optional prebuilt skiff binaries (see skiff.sh; else the repository is built here)
#   REGISTRY_MIRROR      optional host:port serving docker.io and registry.k8s.io over plain HTTP
#   LAB_STATE            the folder control-plane.sh wrote join.sh to (default /vagrant/.lab)
#   JOIN_TIMEOUT         seconds to wait for join.sh to appear (default 900: workers may start before cp is done)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"

: "${NODE_NAME:?NODE_NAME is not set}"
: "${NODE_IP:?NODE_IP is not set}"
LAB_STATE=${LAB_STATE:-/vagrant/.lab}
need_root

"$here/skiff.sh"

if [[ -s /etc/kubernetes/kubelet.conf ]]; then
    say "already joined (/etc/kubernetes/kubelet.conf exists)"
    systemctl start kubelet.service 2>/dev/null || true
    exit 0
fi
wait_until "${JOIN_TIMEOUT:-900}" "$LAB_STATE/join.sh (written by control-plane.sh)" test -s "$LAB_STATE/join.sh"
# skiffd serves its CRI socket only once it runs as the node's kubelet, which `kubeadm join` starts: the
# preflight check of a running runtime cannot pass before, so that one check is skipped.
say "joining: kubeadm join … --cri-socket unix:///run/skiff/skiff.sock"
bash "$LAB_STATE/join.sh" --node-name "$NODE_NAME" --cri-socket unix:///run/skiff/skiff.sock \
    --ignore-preflight-errors=CRI${KUBEADM_IGNORE_PREFLIGHT:+,$KUBEADM_IGNORE_PREFLIGHT}
say "joined: $NODE_NAME runs skiffd as its kubelet"
