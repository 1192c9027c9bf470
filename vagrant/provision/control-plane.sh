#!/usr/bin/env bash
# The lab's control plane: `kubeadm init` on this node. Runs as root in the guest after common.sh; idempotent (an
# initialised control plane is kept; join.sh and admin.conf are written again).
#
#   NODE_NAME, NODE_IP, K8S_VERSION   as for common.sh; the API server advertises NODE_IP, the kubelet reports it
#   POD_SUBNET      default 10.244.0.0/16 (the controller manager gives each Node a /24 of it)
#   SERVICE_SUBNET  default 10.96.0.0/12
#   SKIFF_ON_CP     1: skiffd is this node's kubelet and runtime too (installed by skiff.sh as on the workers; it
#                   runs the control plane's static pods from /etc/kubernetes/manifests). Default: the upstream
#                   kubelet with Debian's containerd
#   REGISTRY_MIRROR optional host:port: docker.io and registry.k8s.io are pulled from this plain-HTTP registry
#   SKIP_PHASES     optional, passed to kubeadm init --skip-phases (the qemu lab: addon/coredns, having no CoreDNS)
#   KUBEADM_TOKEN   optional bootstrap token (abcdef.0123456789abcdef); else one is made (no expiry)
#   KUBEADM_IGNORE_PREFLIGHT  optional, added to --ignore-preflight-errors (e.g. NumCPU,Mem on small guests)
#   LAB_STATE       a folder the workers see (default /vagrant/.lab): join.sh and admin.conf are written there; a
#                   CA in LAB_STATE/pki/ca.{crt,key} is used as the cluster's CA when present
#
# Without SKIFF_ON_CP the node's pods get a bridge network on its podCIDR from Debian's CNI plugins (no add-on:
# the skiff workers route between nodes' podCIDRs themselves), so its kubelet reports Ready.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
. "$here/lib.sh"

: "${NODE_NAME:?NODE_NAME is not set}"
: "${NODE_IP:?NODE_IP is not set}"
K8S_VERSION=${K8S_VERSION:-v1.28.7}
POD_SUBNET=${POD_SUBNET:-10.244.0.0/16}
SERVICE_SUBNET=${SERVICE_SUBNET:-10.96.0.0/12}
LAB_STATE=${LAB_STATE:-/vagrant/.lab}
SKIFF_ON_CP=${SKIFF_ON_CP:-0}
need_root
if [[ -n ${REGISTRY_MIRROR:-} && ! $REGISTRY_MIRROR =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]]; then
    fail "REGISTRY_MIRROR=$REGISTRY_MIRROR: expected host:port"
fi
[[ -z ${KUBEADM_TOKEN:-} || $KUBEADM_TOKEN =~ ^[a-z0-9]{6}\.[a-z0-9]{16}$ ]] ||
    fail "KUBEADM_TOKEN: expected [a-z0-9]{6}.[a-z0-9]{16}"
export KUBECONFIG=/etc/kubernetes/admin.conf

containerd_runtime() {
    install_packages containerd containernetworking-plugins
    mkdir -p /etc/containerd
    # cgroupfs, as the kubelet is told below (skiffd's default too); the CNI plugins are Debian's.
    write_file /etc/containerd/config.toml 0644 <<'TOML'
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "/etc/containerd/certs.d"
TOML
    rm -rf /etc/containerd/certs.d
    if [[ -n ${REGISTRY_MIRROR:-} ]]; then
        local reg server
        for reg in docker.io registry.k8s.io; do
            server=https://$reg
            [[ $reg == docker.io ]] && server=https://registry-1.docker.io
            mkdir -p "/etc/containerd/certs.d/$reg"
            printf 'server = "%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
                "$server" "$REGISTRY_MIRROR" | write_file "/etc/containerd/certs.d/$reg/hosts.toml" 0644
        done
    fi
    systemctl restart containerd
    systemctl enable containerd >/dev/null 2>&1

    # The upstream kubelet under kubeadm's usual unit and drop-in.
    ln -sfn /usr/local/bin/kubelet-upstream /usr/bin/kubelet
    mkdir -p /lib/systemd/system/kubelet.service.d
    write_file /lib/systemd/system/kubelet.service 0644 <<'UNIT'
[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target containerd.service

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
UNIT
    install -m 0644 "$here/../../agent/dist/10-kubeadm.conf" /lib/systemd/system/kubelet.service.d/10-kubeadm.conf
    echo "KUBELET_EXTRA_ARGS=\"--node-ip=$NODE_IP\"" | write_file /etc/default/kubelet 0644
    systemctl daemon-reload
    systemctl enable kubelet.service >/dev/null 2>&1
}

init() {
    if [[ -s /etc/kubernetes/admin.conf ]]; then
        say "control plane already initialised (/etc/kubernetes/admin.conf exists): the phases after it again"
        systemctl start kubelet.service
        finish_init
        return
    fi
    # Nothing has made /etc/kubernetes yet on a node whose kubelet is the stock one (skiff's install makes it).
    install -d -m 0755 /etc/kubernetes
    if [[ -s $LAB_STATE/pki/ca.crt && -s $LAB_STATE/pki/ca.key ]]; then
        install -d -m 0755 /etc/kubernetes/pki
        install -m 0644 "$LAB_STATE/pki/ca.crt" /etc/kubernetes/pki/ca.crt
        install -m 0600 "$LAB_STATE/pki/ca.key" /etc/kubernetes/pki/ca.key
    fi
    "$here/kubeadm-config.sh" | write_file /etc/kubernetes/kubeadm-lab.yaml 0600
    # The static pods' probes give up after a few minutes and restart their container, which on a slow machine (an
    # emulated guest) happens before the API server has started at all: they may take up to 20 minutes here.
    local c
    mkdir -p /etc/kubernetes/lab-patches
    for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do
        printf 'spec:\n  containers:\n  - name: %s\n    startupProbe:\n      failureThreshold: 120\n    livenessProbe:\n      failureThreshold: 30\n' \
            "$c" | write_file "/etc/kubernetes/lab-patches/$c+strategic.yaml" 0644
    done
    local ignore=${KUBEADM_IGNORE_PREFLIGHT:-}
    # skiffd serves its CRI once kubeadm has started it as the kubelet: the runtime and image checks wait for that.
    [[ $SKIFF_ON_CP == 1 ]] && ignore=CRI,ImagePull${ignore:+,$ignore}
    say "kubeadm init (Kubernetes $K8S_VERSION, API server on $NODE_IP:6443)"
    kubeadm init --config /etc/kubernetes/kubeadm-lab.yaml \
        ${SKIP_PHASES:+--skip-phases="$SKIP_PHASES"} ${ignore:+--ignore-preflight-errors="$ignore"}
}

# The phases `kubeadm init` runs once the API server is up, each idempotent: a rerun after an init that gave up
# waiting (a slow machine) completes the control plane instead of leaving it without a join token or kube-proxy.
finish_init() {
    local cfg=/etc/kubernetes/kubeadm-lab.yaml phase
    wait_until 1200 "the API server's /livez" kubectl get --raw=/livez
    for phase in upload-config/all mark-control-plane bootstrap-token kubelet-finalize/all addon/kube-proxy \
        addon/coredns; do
        [[ ,${SKIP_PHASES:-}, == *,$phase,* ]] && continue
        kubeadm init phase ${phase//\// } --config "$cfg"
    done
}

kubectl_for_users() {
    local home user
    for user in root vagrant; do
        id "$user" >/dev/null 2>&1 || continue
        home=$(getent passwd "$user" | cut -d: -f6)
        install -d -m 0700 -o "$user" -g "$(id -gn "$user")" "$home/.kube"
        install -m 0600 -o "$user" -g "$(id -gn "$user")" /etc/kubernetes/admin.conf "$home/.kube/config"
    done
}

# The node's podCIDR as a bridge network of Debian's plugins, for the upstream kubelet's containerd.
pod_network() {
    local cidr
    wait_until 300 "a podCIDR for node $NODE_NAME" \
        sh -c "kubectl get node '$NODE_NAME' -o jsonpath='{.spec.podCIDR}' | grep -q /"
    cidr=$(kubectl get node "$NODE_NAME" -o jsonpath='{.spec.podCIDR}')
    mkdir -p /etc/cni/net.d
    write_file /etc/cni/net.d/10-lab-bridge.conflist 0644 <<JSON
{
  "cniVersion": "0.4.0",
  "name": "lab-pods",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
    say "pod network: bridge cni0 on $cidr"
}

lab_state() {
    local token hash
    install -d -m 0755 "$LAB_STATE"
    token=${KUBEADM_TOKEN:-}
    if [[ -z $token ]]; then
        token=$(kubeadm token list -o jsonpath='{.token}{"\n"}' 2>/dev/null | grep -m1 . || true)
        [[ -n $token ]] || token=$(kubeadm token create --ttl 0)
    fi
    hash=$(openssl x509 -pubkey -noout -in /etc/kubernetes/pki/ca.crt | openssl pkey -pubin -outform der |
        sha256sum | cut -d' ' -f1)
    write_file "$LAB_STATE/join.sh" 0755 <<SH
#!/bin/sh
# Joins this machine to the lab's control plane at $NODE_IP; further kubeadm flags are appended.
exec kubeadm join $NODE_IP:6443 --token $token --discovery-token-ca-cert-hash sha256:$hash "\$@"
SH
    install -m 0600 /etc/kubernetes/admin.conf "$LAB_STATE/admin.conf.new"
    mv -f "$LAB_STATE/admin.conf.new" "$LAB_STATE/admin.conf"
}

if [[ $SKIFF_ON_CP == 1 ]]; then
    "$here/skiff.sh"
else
    containerd_runtime
fi
install_packages openssl
init
kubectl_for_users
[[ $SKIFF_ON_CP == 1 ]] || pod_network
lab_state
wait_until 300 "node $NODE_NAME Ready" kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
say "control plane up: $(kubectl get node "$NODE_NAME" --no-headers -o wide | tr -s ' ')"
