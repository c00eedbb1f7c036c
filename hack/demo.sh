#!/usr/bin/env bash
# make demo: the local control plane, Tenantry's CRDs and roles, the controller, the
# examples, and the resulting organization tree.
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBECONFIG=$PWD/target/controlplane/kubeconfig
demo=target/demo
mkdir -p "$demo"
bin=target/debug/tenantry

echo "== control plane"
hack/up.sh
echo "== build tenantry"
cargo build --locked --quiet
echo "== install the CRDs and the ClusterRoles Tenantry binds"
$bin crd | kubectl apply --server-side -f - >/dev/null
$bin manifests | kubectl apply --server-side -f - >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/organizations.tenantry.dev crd/workspaces.tenantry.dev crd/memberships.tenantry.dev >/dev/null

# The operator's namespace: its leader-election Lease lives there.
kubectl create namespace tenantry-system --dry-run=client -o yaml | kubectl apply -f - >/dev/null

echo "== start the controller (log: $demo/controller.log)"
if [[ -f $demo/controller.pid ]] && kill -0 "$(cat "$demo/controller.pid")" 2>/dev/null; then
  echo "   already running (pid $(cat "$demo/controller.pid"))"
else
  RUST_LOG=${RUST_LOG:-info,kube=warn} setsid "$bin" run >"$demo/controller.log" 2>&1 </dev/null &
  echo $! >"$demo/controller.pid"
fi

echo "== apply examples/ in one go (the organization's namespace is declared with it)"
kubectl apply -f examples/
kubectl wait --for=condition=Ready organization/acme --timeout=120s
kubectl wait --for=condition=Ready workspaces --all -n org-acme --timeout=120s
kubectl wait --for=condition=Ready memberships --all -n org-acme --timeout=120s

echo
kubectl get tenantry -A
echo
$bin tree acme
cat <<MSG

The control plane and the controller keep running. Try:
  export KUBECONFIG=$KUBECONFIG
  kubectl get tenantry -A
  kubectl auth can-i create deployments -n acme--staging --as dave@acme.example
  make down     # stops the controller and the control plane
MSG
