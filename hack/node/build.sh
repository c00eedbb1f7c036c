#!/usr/bin/env bash
# Builds or installs every part of the local node into target/node/bin (Go's build cache
# makes later runs fast):
# - nodebin: kubelet, kube-scheduler and kube-proxy v1.37.2 in one binary, from the same
#   Kubernetes module as the control plane (hack/node, a Go module);
# - containerd v2.4.2 with its runc shim and ctr, from the Go module proxy;
# - kube-router v2.1.0, the NetworkPolicy enforcer (firewall only): the only version the
#   Go module proxy serves here; it has reported security flaws, so it runs only inside
#   this throwaway local cluster (README, "A real node");
# - from Debian: runc, the CNI plugins (bridge, host-local, portmap, loopback), iptables,
#   ipset, conntrack, busybox-static (the test pods' image).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$PWD/target/node/bin
mkdir -p "$bin"
start=$SECONDS

need=()
command -v runc >/dev/null || need+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v ipset >/dev/null || need+=(ipset)
command -v conntrack >/dev/null || need+=(conntrack)
[[ -x /bin/busybox ]] || need+=(busybox-static)
command -v ip >/dev/null || need+=(iproute2)
if ((${#need[@]})); then
  echo "node: installing ${need[*]} (Debian)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

k8s_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37"
echo "node: nodebin (kubelet, kube-scheduler, kube-proxy)"
(cd hack/node && CGO_ENABLED=0 go build -trimpath -ldflags "$k8s_ldflags" -o "$bin/nodebin" .)
echo "node: containerd v2.4.2"
GOBIN=$bin CGO_ENABLED=0 go install -trimpath -tags no_btrfs -ldflags '-s -w' \
  github.com/containerd/containerd/v2/cmd/containerd@v2.4.2 \
  github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@v2.4.2 \
  github.com/containerd/containerd/v2/cmd/ctr@v2.4.2
echo "node: kube-router v2.1.0"
GOBIN=$bin CGO_ENABLED=0 go install -trimpath -ldflags '-s -w' \
  github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@v2.1.0
echo "node: parts ready in $((SECONDS - start))s"
