#!/usr/bin/env bash
# Captures, from a real pty (script(1)), the progress display of a dump and
# a restore of a program with MIB MiB of memory (default 2048), and writes
# the screens as text into docs/progress-dump.txt and docs/progress-restore.txt:
# a few frames while it runs, then the final screen. Needs root, gcc, python3.
# Works in a fresh temporary directory that it removes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
mib=${1:-2048}
work=$(mktemp -d -t ckptfs-capture-XXXXXX)
cleanup() {
	[ -n "${pid:-}" ] && kill -9 "$pid" 2>/dev/null || true
	[ -n "${mpid:-}" ] && { kill "$mpid" 2>/dev/null; wait "$mpid" 2>/dev/null; } || true
	mountpoint -q "$work/mnt" && umount "$work/mnt" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt"
go build -o "$work/ckptfs" ./cmd/ckptfs
gcc -O1 -o "$work/counter" tests/progs/counter.c -lpthread
ckptfs=$work/ckptfs

# render RAW: the screens a terminal showed, from mpb's redraws (cursor up
# N lines, erase to the end): a few frames, then the last.
render() {
	python3 - "$1" <<'PY'
import re, sys
data = open(sys.argv[1], encoding="utf-8", errors="replace").read().replace("\r\n", "\n")
lines, row, frames = [""], 0, []
for tok in re.split(r"(\x1b\[[0-9]*A\x1b\[J|\n|\r)", data):
    if not tok:
        continue
    m = re.fullmatch(r"\x1b\[([0-9]*)A\x1b\[J", tok)
    if m:
        frames.append("\n".join(lines))
        row = max(0, row - int(m.group(1) or 1))
        del lines[row + 1:]
        lines[row] = ""
    elif tok == "\n":
        row += 1
        if row == len(lines):
            lines.append("")
    elif tok == "\r":
        lines[row] = ""
    else:
        lines[row] += re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", tok)
final = "\n".join(lines).rstrip("\n")
picked = [frames[int(i * (len(frames) - 1) / 3)] for i in (1, 2)] if len(frames) > 4 else []
for f in picked:
    print("-- while it runs:")
    print(f.rstrip("\n"))
print("-- at the end:")
print(final)
PY
}

"$work/counter" "$mib" 600000 0 >"$work/counter.out" 2>&1 </dev/null &
pid=$!
until grep -q tick "$work/counter.out" 2>/dev/null; do sleep 0.2; done
script -qfc "stty rows 30 cols 110; $ckptfs dump -v -s $work/store $pid" /dev/null >"$work/dump.raw"
"$ckptfs" mount --daemon "$work/store" "$work/mnt"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
while [ -e "/proc/$pid" ]; do sleep 0.05; done
script -qfc "stty rows 30 cols 110; $ckptfs restore -v $work/mnt/latest" /dev/null >"$work/restore.raw"
{
	echo "\$ ckptfs dump -v -s STORE PID      # a program with $mib MiB of memory, on a 110x30 pty"
	render "$work/dump.raw"
} >docs/progress-dump.txt
{
	echo "\$ ckptfs restore -v MNT/latest      # from a mount of that store"
	render "$work/restore.raw"
} >docs/progress-restore.txt
kill -9 "$pid" 2>/dev/null || true
cat docs/progress-dump.txt docs/progress-restore.txt
