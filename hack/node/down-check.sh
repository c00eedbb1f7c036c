#!/usr/bin/env bash
# The teardown test (`make node-cycle`, run by CI after `make test`): `make down` leaves
# nothing of the node behind, and a second `make node` starts clean and runs a pod.
#   hack/node/down-check.sh          checks that nothing is left (exit 1 naming what is)
#   hack/node/down-check.sh --cycle  checks, starts a node, runs a pod, tears it down,
#                                    checks again
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

leftovers() { # prints one line per thing the node left behind
  local p exe
  for p in /proc/[0-9]*; do # by executable: the node's are started through PATH
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    [[ $exe == "$root/target/node/bin/"* || $exe == "$root/target/controlplane/bin/"* ]] || continue
    echo "process ${p#/proc/}: $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | cut -c1-100)"
  done
  local ipt table
  for ipt in iptables ip6tables; do
    command -v "$ipt-save" >/dev/null || continue
    for table in filter nat mangle raw; do
      "$ipt-save" -t "$table" 2>/dev/null | grep -E '^:(KUBE-|CNI-)' | sed "s/^/$ipt $table chain /" || true
    done
  done
  if command -v ipset >/dev/null; then
    ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router|inet6:KUBE-)' | sed 's/^/ipset /' || true
  fi
  ip link show cni0 >/dev/null 2>&1 && echo "link cni0"
  ip netns list 2>/dev/null | awk '/^cni-/ {print "netns " $1}'
  grep -oE " (/var/lib/kubelet|/run/containerd)[^ ]*" /proc/mounts | sed 's/^ /mount /' || true
  [[ -e /etc/cni/net.d/10-tenantry-podnet.conflist ]] && echo "file /etc/cni/net.d/10-tenantry-podnet.conflist"
  [[ -d /var/lib/cni/networks/podnet ]] && echo "dir /var/lib/cni/networks/podnet (address leases)"
  [[ -d $root/target/node/pids ]] && echo "dir target/node/pids"
  return 0
}

check() { # WHEN
  local left
  left=$(leftovers)
  if [[ -n $left ]]; then
    echo "down-check: $1, the node left behind:" >&2
    echo "$left" >&2
    exit 1
  fi
  echo "down-check: $1, nothing of the node is left"
}

check "before"
[[ ${1:-} == --cycle ]] || exit 0

make --no-print-directory node
export KUBECONFIG=$root/target/controlplane/kubeconfig
kubectl delete pod cycle -n default --ignore-not-found --wait=true >/dev/null
kubectl run cycle -n default --image localhost/busybox:local --image-pull-policy Never \
  --restart Never --command -- sh -c 'echo second node up' >/dev/null
for _ in $(seq 1 300); do
  phase=$(kubectl get pod cycle -n default -o jsonpath='{.status.phase}')
  [[ $phase == Succeeded || $phase == Failed ]] && break
  sleep 0.2
done
log=$(kubectl logs cycle -n default 2>&1 || true)
if [[ $phase != Succeeded || $log != "second node up" ]]; then
  echo "down-check: the second node did not run a pod (phase ${phase:-none}): $log" >&2
  kubectl describe pod cycle -n default >&2 || true
  hack/down.sh >/dev/null 2>&1 || true
  exit 1
fi
echo "down-check: the second node ran a pod"
hack/down.sh
check "after the second node"
