#!/usr/bin/env bash
# Runs the README's "Running it" commands exactly as written (the first sh block under
# "## Running it"), on a control plane of their own, then checks that the example
# organization and its workspaces become Ready. CI runs it (`make readme-check`): a
# newcomer copying that block must not be the first to find it broken.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
block=$(awk '/^## Running it/ {f = 1} f && /^```sh$/ {b = 1; next} b && /^```$/ {exit} b' README.md)
[[ -n $block ]] || { echo "readme-check: no sh block under '## Running it' in README.md" >&2; exit 1; }

work=$(mktemp -d)
cp_pid='' group=''
cleanup() {
  [[ -n $group ]] && kill -TERM -- "-$group" 2>/dev/null || true
  [[ -n $cp_pid ]] && kill -TERM "$cp_pid" 2>/dev/null && wait "$cp_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

target/controlplane/bin/controlplane up --dir "$work/cp" --kubeconfig "$work/kubeconfig" \
  --ready-file "$work/ready" >"$work/controlplane.log" 2>&1 </dev/null &
cp_pid=$!
for _ in $(seq 1 240); do [[ -f $work/ready ]] && break; sleep 1; done
[[ -f $work/ready ]] || { cat "$work/controlplane.log" >&2; echo "readme-check: no control plane" >&2; exit 1; }
export KUBECONFIG=$work/kubeconfig
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

echo "== the README's Running it block, as written:"
printf '%s\n' "$block" | sed 's/^/   /'
printf '%s\n' "$block" >"$work/running-it.sh"
# Its own process group, so that the `tenantry run &` it leaves running can be stopped.
setsid bash -euo pipefail "$work/running-it.sh" >"$work/running-it.log" 2>&1 </dev/null &
group=$!
if ! wait "$group"; then
  cat "$work/running-it.log" >&2
  echo "readme-check: the Running it block failed" >&2
  exit 1
fi
ok=true
kubectl wait --for=condition=Ready organization/acme --timeout=120s || ok=false
kubectl wait --for=condition=Ready workspaces --all -n org-acme --timeout=120s || ok=false
if ! $ok; then
  tail -50 "$work/running-it.log" >&2
  exit 1
fi
kubectl get organizations --no-headers | wc -l | xargs echo "readme-check: organizations:"
echo "readme-check: the Running it block works as written (from $root)"
