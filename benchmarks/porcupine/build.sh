#!/bin/sh
# Builds the Porcupine driver for benchmarks/bench_check.py --porcupine, offline, with the
# Go of Debian's golang-go and a local copy of Porcupine's source:
#
#   benchmarks/porcupine/build.sh PORCUPINE_SOURCE [OUTPUT]
#
# PORCUPINE_SOURCE is a checkout of https://github.com/anishathalye/porcupine (the numbers in
# docs/BENCHMARKS.md: commit 55508eb, Go 1.19); its test_data/kv is bench_check.py's
# --porcupine-kv. OUTPUT defaults to build/porcupine-check at the repository root.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 1 ] || [ ! -f "$1/go.mod" ] || ! grep -q '^module github.com/anishathalye/porcupine$' "$1/go.mod"; then
  echo "usage: $0 PORCUPINE_SOURCE [OUTPUT]" >&2
  echo "PORCUPINE_SOURCE must be a checkout of Porcupine's source, e.g.:" >&2
  echo "  git clone https://github.com/anishathalye/porcupine /tmp/porcupine" >&2
  echo "  git -C /tmp/porcupine checkout 55508eb" >&2
  exit 2
fi
command -v go >/dev/null || { echo "go not found: sudo apt-get install golang-go" >&2; exit 2; }
source_dir=$(cd "$1" && pwd)
output=${2:-$here/../../build/porcupine-check}
mkdir -p "$(dirname "$output")"
output=$(cd "$(dirname "$output")" && pwd)/$(basename "$output")

# A go.mod of our own with the replace directive, so the committed one stays put.
modfile=$(mktemp -d)
trap 'rm -rf "$modfile"' EXIT
cp "$here/go.mod" "$modfile/go.mod"
export GOPROXY=off GOFLAGS=-mod=mod
go mod edit -replace "github.com/anishathalye/porcupine=$source_dir" "$modfile/go.mod"
cd "$here"
go build -modfile "$modfile/go.mod" -o "$output" .
echo "built $output (Porcupine from $source_dir, $(go version))"
