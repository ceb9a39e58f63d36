#!/usr/bin/env bash
# Runs every test: unit tests beside each package and the end-to-end tests in
# tests/ (real processes, ptrace, FUSE mounts, Badger). Needs root, gcc, gdb,
# python3 and /dev/fuse.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
go vet ./...
go test -count=1 -timeout 9m ./...
