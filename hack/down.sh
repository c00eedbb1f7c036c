#!/usr/bin/env bash
# Stops the control plane started by hack/up.sh: SIGTERM, then SIGKILL after 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/controlplane
pidfile=$dir/controlplane.pid
# The node, if any (make node).
hack/node/down.sh
# The demo's controller and discovery server, if any.
for server in controller discovery; do
  if [[ -f target/demo/$server.pid ]]; then
    kill -TERM "$(cat "target/demo/$server.pid")" 2>/dev/null || true
    rm -f "target/demo/$server.pid"
  fi
done
if [[ ! -f $pidfile ]]; then
  echo "down: no control plane running"
  exit 0
fi
pid=$(cat "$pidfile")
if kill -TERM "$pid" 2>/dev/null; then
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "down: still running after 30s, killing" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi
rm -f "$pidfile" "$dir/ready"
echo "down: control plane stopped"
