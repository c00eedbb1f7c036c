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
echo "== install the CRDs, the ClusterRoles Tenantry binds and the admission policies"
$bin crd | kubectl apply --server-side -f - >/dev/null
# With tenantry-finalizers (the bundled control plane serves MutatingAdmissionPolicy):
# the API server refuses new Organizations for a few seconds, until its admission has
# the new CRDs' schema; await-admission returns once one is admitted.
$bin manifests --mutating=include | kubectl apply --server-side -f - >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/organizations.tenantry.dev crd/workspaces.tenantry.dev crd/memberships.tenantry.dev >/dev/null
$bin await-admission --timeout-seconds 120

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

echo "== the discovery API: every member lists their own (log: $demo/discovery.log)"
# A CA and a serving certificate for the name the API server checks; the server runs on
# this host, behind an ExternalName Service (the chart runs it in the cluster instead).
tls=$demo/discovery-tls
if [[ ! -f $tls/tls.crt ]]; then
  mkdir -p "$tls"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -days 30 -subj /CN=tenantry-discovery-ca \
    -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
  openssl req "${ec[@]}" -subj /CN=tenantry-discovery -keyout "$tls/tls.key" -out "$tls/tls.csr" 2>/dev/null
  printf 'subjectAltName=DNS:tenantry-discovery.tenantry-system.svc\n' >"$tls/san.ext"
  openssl x509 -req -in "$tls/tls.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
    -days 30 -extfile "$tls/san.ext" -out "$tls/tls.crt" 2>/dev/null
fi
if [[ -f $demo/discovery.pid ]] && kill -0 "$(cat "$demo/discovery.pid")" 2>/dev/null; then
  port=$(cat "$demo/discovery.port")
else
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  admin_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  RUST_LOG=${RUST_LOG:-info,kube=warn} setsid "$bin" discovery-server --address "127.0.0.1:$port" \
    --admin-address "127.0.0.1:$admin_port" --tls-cert "$tls/tls.crt" --tls-key "$tls/tls.key" \
    >"$demo/discovery.log" 2>&1 </dev/null &
  echo $! >"$demo/discovery.pid"
  echo "$port" >"$demo/discovery.port"
fi
kubectl apply --server-side -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: tenantry-discovery, namespace: tenantry-system}
spec: {type: ExternalName, externalName: localhost}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1alpha1.discovery.tenantry.dev}
spec:
  group: discovery.tenantry.dev
  version: v1alpha1
  groupPriorityMinimum: 1000
  versionPriority: 15
  service: {name: tenantry-discovery, namespace: tenantry-system, port: $port}
  caBundle: $(base64 -w0 "$tls/ca.crt")
YAML
kubectl wait --for=condition=Available apiservice/v1alpha1.discovery.tenantry.dev --timeout=60s >/dev/null
echo "\$ kubectl get myorganizations,myworkspaces --as dave@acme.example"
kubectl get myorganizations,myworkspaces --as dave@acme.example

echo
kubectl get tenantry -A
echo
$bin tree acme
cat <<MSG

The control plane and the controller keep running. Try:
  export KUBECONFIG=$KUBECONFIG
  kubectl get tenantry -A
  kubectl auth can-i create deployments -n acme--staging --as dave@acme.example
  kubectl get myworkspaces --as carol@acme.example
  make down     # stops the controller and the control plane
MSG
