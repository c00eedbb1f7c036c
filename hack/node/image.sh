#!/usr/bin/env bash
# make image: Tenantry's OCI image, built without a registry or a container tool: one
# static binary (glibc linked in, +crt-static; jemalloc and ring's C too) and nothing else
# (no shell, no libraries), run as 65532:65532; tagged as the chart's default image
# (ghcr.io/tenantry-dev/tenantry:<appVersion>) and, when the node's containerd runs
# (make node), imported into it, pinned. Output: target/image/tenantry.tar.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(awk '/^appVersion:/ {gsub(/"/, "", $2); print $2}' charts/tenantry/Chart.yaml)
name=ghcr.io/tenantry-dev/tenantry:$version
# The amd64 image: the node runs on this machine (x86_64 Linux, glibc).
if [[ $(rustc -vV | sed -n 's/^host: //p') != x86_64-unknown-linux-gnu ]]; then
  echo "image: builds an amd64 image on x86_64 Linux (glibc) only" >&2
  exit 1
fi
# The same build as make build and make install (the README's Running it).
binary=$(hack/build.sh)
out=target/image
rootfs=$out/rootfs
rm -rf "$rootfs" && mkdir -p "$rootfs/tmp" && chmod 1777 "$rootfs/tmp"
cp "$binary" "$rootfs/tenantry"
python3 hack/node/mkoci.py "$name" "$out/tenantry.tar" "$rootfs" --user 65532:65532 \
  --entrypoint '["/tenantry"]' --cmd '["run","--log-format","json"]'
if [[ -f target/node/pids/containerd.pid ]] && target/node/bin/ctr version >/dev/null 2>&1; then
  target/node/bin/ctr -n k8s.io images import "$out/tenantry.tar" >/dev/null
  # Pinned: no registry could give it back after the kubelet's image garbage collection.
  target/node/bin/ctr -n k8s.io images label "$name" io.cri-containerd.pinned=pinned >/dev/null
  echo "image: $name imported into the node's containerd"
fi
