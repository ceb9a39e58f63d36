#!/usr/bin/env bash
# Captures, from a real pty (script(1)), the progress display of a dump, a
# verify, a gc, a restore and a lazy restore (--lazy-wait) of a program
# holding MIB MiB (default 2048) of distinct pages (tests/progs/memhog.c),
# and writes the screens as text into docs/progress-{dump,verify,gc,
# restore,lazy}.txt: a few frames while it runs, then the final screen.
# Needs root, gcc, python3. Works in a fresh temporary directory that it
# removes, and kills the programs it started.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
mib=${1:-2048}
work=$(mktemp -d -t ckptfs-capture-XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	mountpoint -q "$work/mnt" && umount "$work/mnt" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt"
go build -o "$work/ckptfs" ./cmd/ckptfs
gcc -O1 -o "$work/memhog" tests/progs/memhog.c
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

# on_pty NAME CMD...: runs CMD with stderr (and stdin, stdout as given in
# CMD) on a 110x30 pty, its screen into $work/NAME.raw.
on_pty() {
	local name=$1
	shift
	script -qfc "stty rows 30 cols 110; $*" /dev/null >"$work/$name.raw"
}

# wait_gone PID: until the process is reaped.
wait_gone() { while [ -e "/proc/$1" ]; do sleep 0.05; done; }

# memhog reads its commands from a fifo this shell keeps open (fd 7): a
# restored memhog gets it again as restore's stdin.
mkfifo "$work/in"
exec 7<>"$work/in"
"$work/memhog" "$mib" <"$work/in" >"$work/hog.out" 2>&1 &
pid=$!
pids+=("$pid")
until grep -q ready "$work/hog.out" 2>/dev/null; do sleep 0.2; done

on_pty dump "$ckptfs dump -v -s $work/store $pid"
on_pty verify "$ckptfs verify -s $work/store"
# Half the pages change; a second dump; the first removed: gc frees half
# of the first dump's pages, and rewrites the packs that are half dead.
echo "touch $((mib * 128))" >&7
until grep -q done "$work/hog.out" 2>/dev/null; do sleep 0.2; done
first=$("$ckptfs" ls -s "$work/store" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
"$ckptfs" dump -q -s "$work/store" "$pid" >/dev/null
"$ckptfs" rm -s "$work/store" "$first" >/dev/null
on_pty gc "$ckptfs gc -s $work/store"

"$ckptfs" mount --daemon "$work/store" "$work/mnt"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
wait_gone "$pid"
on_pty restore "$ckptfs restore -v $work/mnt/latest <$work/in >$work/restore.out"
kill -9 "$pid"
wait_gone "$pid"
on_pty lazy "$ckptfs restore -v --lazy --lazy-wait --lazy-log $work/lazy.log $work/mnt/latest <$work/in >$work/lazy.out"
kill -9 "$pid"
wait_gone "$pid"

{
	echo "\$ ckptfs dump -v -s STORE PID      # a program with $mib MiB of distinct pages, on a 110x30 pty"
	render "$work/dump.raw"
} >docs/progress-dump.txt
{
	echo "\$ ckptfs verify -s STORE           # that one checkpoint of $mib MiB"
	render "$work/verify.raw"
} >docs/progress-verify.txt
{
	echo "\$ ckptfs gc -s STORE               # after half the pages changed, a second dump, and rm of the first"
	render "$work/gc.raw"
} >docs/progress-gc.txt
{
	echo "\$ ckptfs restore -v MNT/latest      # from a mount of that store (stdout, the pid, to a file)"
	render "$work/restore.raw"
} >docs/progress-restore.txt
{
	echo "\$ ckptfs restore -v --lazy --lazy-wait MNT/latest      # the same, lazily: the program runs during the fill"
	render "$work/lazy.raw"
} >docs/progress-lazy.txt
cat docs/progress-{dump,verify,gc,restore,lazy}.txt
