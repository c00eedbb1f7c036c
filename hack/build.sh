#!/usr/bin/env bash
# The release binary, built one way for `make build`, `make install` (the README's Running
# it) and `make image`, so the three share one build: on Linux with glibc it is static
# (+crt-static: glibc, jemalloc and ring's C linked in; it runs in an image with nothing
# else). With an explicit --target, RUSTFLAGS reach only the binary (build scripts and proc
# macros stay dynamic), and the output lands apart from target/release (make bench's).
# Builds the kubectl plugin (kubectl-tenantry) beside it. Prints tenantry's path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
flags=${RUSTFLAGS:-}
[[ $triple == *-linux-gnu ]] && flags="$flags -C target-feature=+crt-static"
RUSTFLAGS=$flags cargo build --release --locked --bin tenantry --bin kubectl-tenantry --target "$triple" >&2
binary=target/$triple/release/tenantry
for b in "$binary" "$(dirname "$binary")/kubectl-tenantry"; do
  if [[ $triple == *-linux-gnu ]] && readelf -d "$b" | grep -q NEEDED; then
    echo "build: $b links shared libraries; it must be static" >&2
    exit 1
  fi
done
echo "$binary"
