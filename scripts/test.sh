#!/usr/bin/env bash
# Runs the tests package by package, saying which one runs and how far the
# run is: unit tests beside each package and the end-to-end tests in tests/
# (real processes, ptrace, FUSE mounts, Badger). Needs root, gcc, gdb,
# python3 and /dev/fuse.
#
#   scripts/test.sh            go vet, then every package (the full suite)
#   scripts/test.sh -short     the unit tests only, in seconds: no tests/
#                              package, and tests that build programs,
#                              trace processes or mount skip themselves
#   scripts/test.sh PKG...     only these packages (./dedup ./cmd/ckptfs)
#
# Extra go test flags go in $GOTESTFLAGS (e.g. GOTESTFLAGS="-run TestX -v").
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

short=
if [ "${1:-}" = "-short" ]; then
	short=-short
	shift
fi
if [ $# -gt 0 ]; then
	pkgs=("$@")
else
	mapfile -t pkgs < <(go list ./... | sed "s|^$(go list -m)|.|")
	if [ -n "$short" ]; then
		mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | grep -v '^\./tests$')
	fi
fi

if [ -z "$short" ]; then
	echo "== go vet ./..."
	go vet ./... || exit 1
fi

if [ -n "$short" ]; then
	# Unit tests only: one go test over every package, so packages build
	# and run in parallel; go test prints a line per package as it ends.
	start=$(date +%s)
	# shellcheck disable=SC2086
	go test -short -count=1 -timeout 5m ${GOTESTFLAGS:-} "${pkgs[@]}"
	rc=$?
	echo "short run: $(($(date +%s) - start))s"
	exit $rc
fi

n=${#pkgs[@]}
passed=0 failed=0 i=0
failures=()
start=$(date +%s)
for pkg in "${pkgs[@]}"; do
	i=$((i + 1))
	t0=$(date +%s)
	printf '== [%d/%d] %s\n' "$i" "$n" "$pkg"
	# shellcheck disable=SC2086
	if go test $short -count=1 -timeout 9m ${GOTESTFLAGS:-} "$pkg"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("$pkg")
	fi
	printf '   [%d/%d] %s took %ds; %d passed, %d failed so far, %ds in all\n' \
		"$i" "$n" "$pkg" $(($(date +%s) - t0)) "$passed" "$failed" $(($(date +%s) - start))
done
if [ "$failed" -gt 0 ]; then
	echo "failed packages: ${failures[*]}"
fi
echo "packages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
