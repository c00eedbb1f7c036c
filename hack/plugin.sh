#!/usr/bin/env bash
# make plugin: kubectl-tenantry (the release build, static on Linux: hack/build.sh) as a
# krew archive, and the krew manifest (deploy/krew/tenantry.yaml) with the version and
# the archive's sha256 filled in. Output: target/plugin/.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(hack/build.sh)
version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
out=target/plugin
rm -rf "$out" && mkdir -p "$out/stage"
cp "$(dirname "$binary")/kubectl-tenantry" "$out/stage/"
archive=$out/kubectl-tenantry-linux-amd64.tar.gz
tar -C "$out/stage" --owner=0 --group=0 --mtime=@0 -czf "$archive" kubectl-tenantry
sha=$(sha256sum "$archive" | cut -d' ' -f1)
sed -e "s/@VERSION@/$version/g" -e "s/@SHA256@/$sha/" deploy/krew/tenantry.yaml >"$out/tenantry.yaml"
rm -rf "$out/stage"
echo "plugin: $archive (sha256 $sha), manifest $out/tenantry.yaml"
