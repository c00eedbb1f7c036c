#!/usr/bin/env bash
# Tears down what hack/node/up.sh started, so that a second `make node` starts clean: the
# pods (through containerd), the node's processes, kube-proxy's and kube-router's iptables
# chains and ipsets (and the kubelet's), the CNI bridge, network namespaces and address
# leases, and the kubelet's mounts. The images stay in /var/lib/containerd.
set -uo pipefail
cd "$(dirname "$0")/../.."
node=$PWD/target/node
[[ -d $node/pids ]] || exit 0
export PATH=$node/bin:$PATH

stop() { # NAME: SIGTERM, then SIGKILL after 10 s
  local f=$node/pids/$1.pid
  [[ -f $f ]] || return 0
  local pid
  pid=$(cat "$f")
  if kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# No new pods, then every pod's containers and sandboxes through containerd (the shims
# exit with them).
for p in kubelet kube-scheduler kube-controller-manager; do stop "$p"; done
if [[ -f $node/pids/containerd.pid ]] && ctr version >/dev/null 2>&1; then
  for t in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do
    ctr -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1
  done
  sleep 1
  for t in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do ctr -n k8s.io tasks delete -f "$t" >/dev/null 2>&1; done
  for c in $(ctr -n k8s.io containers ls -q 2>/dev/null); do ctr -n k8s.io containers delete "$c" >/dev/null 2>&1; done
fi
for p in kube-proxy kube-router containerd; do stop "$p"; done
pkill -KILL -f containerd-shim-runc-v2 2>/dev/null || true

# iptables (IPv4 and IPv6): every chain of kube-proxy, kube-router, the kubelet and the
# CNI plugins, and the rules that jump to them; the rest of each table is kept.
for ipt in iptables ip6tables; do
  command -v "$ipt-save" >/dev/null || continue
  for table in filter nat mangle raw; do
    saved=$("$ipt-save" -t "$table" 2>/dev/null) || continue
    grep -qE 'KUBE-|CNI-' <<<"$saved" || continue
    grep -vE 'KUBE-|CNI-' <<<"$saved" | "$ipt-restore" -T "$table" 2>/dev/null ||
      echo "node down: could not clean the $ipt $table table" >&2
  done
done
if command -v ipset >/dev/null; then
  for set in $(ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router|inet6:KUBE-)'); do
    ipset destroy "$set" 2>/dev/null
  done
fi

# The network: pods' namespaces, the bridge, the address leases, the CNI config.
for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$ns"; done
ip link del cni0 2>/dev/null || true
rm -rf /var/lib/cni/networks/podnet /etc/cni/net.d/10-tenantry-podnet.conflist
# The kubelet's and containerd's mounts (pod volumes, sandboxes' shm, rootfs).
for dir in /var/lib/kubelet /run/containerd; do
  grep -o " $dir[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
done
rm -rf /var/lib/kubelet/pods "$node/pids"
echo "down: node stopped and cleaned up"
