#!/usr/bin/env bash
# Checks that the tools the tests use are installed; says how to get the missing ones.
missing=()
for tool in go cargo kubectl lua5.4 openssl curl make flock; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "missing tools: ${missing[*]}" >&2
  echo "on Debian: apt-get install -y lua5.4 openssl curl util-linux make (Go, Rust and kubectl from your usual source)" >&2
  exit 1
fi
