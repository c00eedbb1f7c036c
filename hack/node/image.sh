#!/usr/bin/env bash
# make image: Tenantry's OCI image, built without a registry or a container tool: the
# release binary and the few shared libraries it links (glibc, libm, libgcc_s, the
# loader), nothing else (no shell), run as 65532:65532; tagged as the chart's default
# image (ghcr.io/tenantry-dev/tenantry:<appVersion>) and, when the node's containerd runs
# (make node), imported into it, pinned. Output: target/image/tenantry.tar.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(awk '/^appVersion:/ {gsub(/"/, "", $2); print $2}' charts/tenantry/Chart.yaml)
name=ghcr.io/tenantry-dev/tenantry:$version
cargo build --release --locked --bin tenantry
out=target/image
rootfs=$out/rootfs
rm -rf "$rootfs" && mkdir -p "$rootfs/tmp" && chmod 1777 "$rootfs/tmp"
hack/node/copy-with-libs.sh target/release/tenantry "$rootfs" /tenantry
python3 hack/node/mkoci.py "$name" "$out/tenantry.tar" "$rootfs" --user 65532:65532 \
  --entrypoint '["/tenantry"]' --cmd '["run","--log-format","json"]'
if [[ -f target/node/pids/containerd.pid ]] && target/node/bin/ctr version >/dev/null 2>&1; then
  target/node/bin/ctr -n k8s.io images import "$out/tenantry.tar" >/dev/null
  # Pinned: no registry could give it back after the kubelet's image garbage collection.
  target/node/bin/ctr -n k8s.io images label "$name" io.cri-containerd.pinned=pinned >/dev/null
  echo "image: $name imported into the node's containerd"
fi
