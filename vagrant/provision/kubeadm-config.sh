#!/usr/bin/env bash
# Prints the `kubeadm init` configuration of the lab's control plane (control-plane.sh writes it to
# /etc/kubernetes/kubeadm-lab.yaml): the API server advertising NODE_IP, the kubelet's node-ip, the pod and service
# ranges, the Kubernetes version, the CRI socket (skiffd's with SKIFF_ON_CP=1, else containerd's), the bootstrap
# token KUBEADM_TOKEN when set, the cgroupfs driver every node's kubelet uses (skiffd's default), and patience for
# slow machines.
# Reads NODE_NAME, NODE_IP, K8S_VERSION, POD_SUBNET, SERVICE_SUBNET, SKIFF_ON_CP, KUBEADM_TOKEN as control-plane.sh.
set -euo pipefail
: "${NODE_NAME:?NODE_NAME is not set}"
: "${NODE_IP:?NODE_IP is not set}"
socket=unix:///run/containerd/containerd.sock
[[ ${SKIFF_ON_CP:-0} == 1 ]] && socket=unix:///run/skiff/skiff.sock
token=""
[[ -n ${KUBEADM_TOKEN:-} ]] && token="bootstrapTokens:
- token: $KUBEADM_TOKEN
  ttl: 0s
  groups: [system:bootstrappers:kubeadm:default-node-token]
  usages: [signing, authentication]"
cat <<YAML
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
$token
localAPIEndpoint:
  advertiseAddress: $NODE_IP
  bindPort: 6443
patches:
  directory: /etc/kubernetes/lab-patches
nodeRegistration:
  name: $NODE_NAME
  criSocket: $socket
  kubeletExtraArgs:
    node-ip: $NODE_IP
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
kubernetesVersion: ${K8S_VERSION:-v1.28.7}
clusterName: skiff-lab
controlPlaneEndpoint: $NODE_IP:6443
apiServer:
  certSANs: [$NODE_IP, $NODE_NAME]
  # A slow machine (an emulated guest) takes minutes to start the API server: kubeadm waits for it, and its
  # probes wait too (the patches in /etc/kubernetes/lab-patches, written by control-plane.sh).
  timeoutForControlPlane: 20m0s
# One control plane: nothing to elect. On a slow machine the API server answers lease renewals later than their
# 10 s deadline, and a controller-manager that loses its lease exits (no podCIDRs meanwhile).
controllerManager:
  extraArgs:
    leader-elect: "false"
scheduler:
  extraArgs:
    leader-elect: "false"
networking:
  podSubnet: ${POD_SUBNET:-10.244.0.0/16}
  serviceSubnet: ${SERVICE_SUBNET:-10.96.0.0/12}
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
YAML
