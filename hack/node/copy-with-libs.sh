#!/usr/bin/env bash
# copy-with-libs.sh BINARY ROOTFS DEST: copies BINARY to ROOTFS/DEST and every shared
# library it links (and the loader) to the same paths under ROOTFS: an image's whole
# userland for a dynamically linked program, without a distribution.
set -euo pipefail
binary=$1 rootfs=$2 dest=$3
mkdir -p "$rootfs$(dirname "$dest")"
cp -L "$binary" "$rootfs$dest"
for lib in $(ldd "$binary" | grep -oE '/[^ ]+'); do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
