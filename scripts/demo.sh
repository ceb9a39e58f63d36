#!/usr/bin/env bash
# Builds ckptfs and shows the main job: start a program, dump it twice,
# mount the store, look around with ls/cat, kill the program and restore it
# from the mount. Needs root (ptrace of any process, FUSE, clone3 set_tid).
# Everything goes into a fresh temporary directory, removed at the end
# (CKPTFS_DEMO_KEEP=1 keeps it and says where).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/ckptfs-demo-XXXXXX")
export PATH=$PATH:/usr/local/go/bin

echo "== build"
go build -o bin/ckptfs ./cmd/ckptfs
gcc -O1 -g -o bin/counter tests/progs/counter.c -lpthread
ckptfs=$PWD/bin/ckptfs

cleanup() {
	# The mount goes last, once the program is gone, and is waited for.
	[ -n "${restored:-}" ] && kill -9 "$restored" 2>/dev/null || true
	[ -n "${pid:-}" ] && kill -9 "$pid" 2>/dev/null || true
	for p in ${restored:-} ${pid:-}; do
		while [ -e "/proc/$p" ] && ! grep -q '^State:.Z' "/proc/$p/status" 2>/dev/null; do sleep 0.05; done
	done
	[ -n "${mpid:-}" ] && { kill "$mpid" 2>/dev/null; wait "$mpid" 2>/dev/null; } || true
	mountpoint -q "$work/mnt" && umount "$work/mnt" 2>/dev/null || true
	if [ -n "${CKPTFS_DEMO_KEEP:-}" ]; then
		echo "(kept $work)"
	elif ! mountpoint -q "$work/mnt"; then
		rm -rf "$work"
	fi
}
trap cleanup EXIT
mkdir -p "$work/mnt"

echo "== start a program: 64 MiB of self-checked memory, 2 threads, a line every 0.5 s"
bin/counter 64 500 2 >"$work/counter.out" 2>&1 </dev/null &
pid=$!
sleep 1.2; tail -n 2 "$work/counter.out"

echo "== what this machine offers"
"$ckptfs" check

echo "== dump it twice while it runs (the second adds almost nothing)"
id1=$("$ckptfs" dump -s "$work/store" --name demo "$pid")
sleep 1
id2=$("$ckptfs" dump -s "$work/store" "$pid")
"$ckptfs" ls -s "$work/store"
"$ckptfs" stats -s "$work/store"
echo "-- what changed between the two (from the page tables alone)"
changes=$("$ckptfs" diff -s "$work/store" "$id1" "$id2")
grep -v '^files' <<<"$changes" | head -n 8

echo "== mount the store"
"$ckptfs" mount "$work/store" "$work/mnt" & mpid=$!
for _ in $(seq 50); do mountpoint -q "$work/mnt" && break; sleep 0.1; done
ls "$work/mnt" "$work/mnt/latest/" "$work/mnt/latest/tasks/$pid"
echo "-- info";    cat "$work/mnt/latest/info"
echo "-- status";  cat "$work/mnt/latest/tasks/$pid/status"
echo "-- maps";    head -n 5 "$work/mnt/latest/tasks/$pid/maps"
echo "-- a thread's registers"; head -n 4 "$work/mnt/latest/tasks/$pid/threads/$pid/regs"
echo "-- gdb on the generated core file"
gdb -batch -ex 'thread apply all bt 3' bin/counter "$work/mnt/latest/tasks/$pid/core" 2>/dev/null | grep -E '^(#|Thread)' | head -n 8 || true

echo "== kill the program, wait until its pid is free, restore it from the mount"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
while [ -e "/proc/$pid" ]; do sleep 0.05; done
restored=$("$ckptfs" restore "$work/mnt/latest" | tail -n 1)
echo "restored pid $restored (was $pid)"
sleep 1.2
first=$(tail -n 1 "$work/counter.out")
sleep 1.2
echo "-- output: it goes on counting from the checkpoint's tick (stdout's offset was"
echo "   restored too, so lines written after the checkpoint are overwritten), memory intact"
tail -n 4 "$work/counter.out"
last=$(tail -n 1 "$work/counter.out")
kill -0 "$restored" && [ "$first" != "$last" ] && ! grep -q BAD "$work/counter.out"
kill -9 "$restored"
echo "== demo OK"
