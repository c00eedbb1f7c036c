#!/usr/bin/env bash
# Starts the local control plane in the background (once), waits until it is ready and
# leaves its admin kubeconfig at target/controlplane/kubeconfig. Idempotent: a second
# call while it runs only prints where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/controlplane
bin=$dir/bin/controlplane
pidfile=$dir/controlplane.pid
ready=$dir/ready
kubeconfig=$dir/kubeconfig
log=$dir/controlplane.log
timeout=${CONTROLPLANE_TIMEOUT:-240}

[[ -x $bin ]] || { echo "up: $bin is missing: run 'make controlplane' first" >&2; exit 1; }
mkdir -p "$dir"
exec 9>"$dir/up.lock"
flock 9

running() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

if running && [[ -f $ready ]]; then
  echo "up: control plane already running (pid $(cat "$pidfile")); export KUBECONFIG=$PWD/$kubeconfig"
  exit 0
fi
# NODE=1 (make node): the API server listens beyond 127.0.0.1, so that pods reach it
# (through the kubernetes Service), and reaches the kubelet by its InternalIP.
# Its state is fresh each time (target/controlplane/run-node), apart from make up's.
extra=()
state=$dir/run
if [[ ${NODE:-} == 1 ]]; then
  extra=(--apiserver-arg=--bind-address=0.0.0.0 --apiserver-arg=--kubelet-preferred-address-types=InternalIP)
  state=$dir/run-node
fi
if ! running; then
  rm -f "$ready" "$pidfile"
  [[ ${NODE:-} == 1 ]] && rm -rf "$state"
  echo "$state" >"$dir/state-dir"
  setsid "$bin" up --dir "$state" --kubeconfig "$kubeconfig" --ready-file "$ready" \
    --pid-file "$pidfile" "${extra[@]}" </dev/null >"$log" 2>&1 9>&- &
fi
deadline=$((SECONDS + timeout))
while (( SECONDS < deadline )); do
  if [[ -f $ready ]]; then
    echo "up: control plane ready (pid $(cat "$pidfile")); export KUBECONFIG=$PWD/$kubeconfig"
    exit 0
  fi
  if [[ -f $pidfile ]] && ! running; then
    echo "up: the control plane exited before it was ready; last lines of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
  sleep 0.2
done
echo "up: the control plane was not ready within ${timeout}s; last lines of $log:" >&2
tail -n 40 "$log" >&2
exit 1
