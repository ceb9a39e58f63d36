package main

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// diffProg holds 4 MiB of memory; on each line on stdin it rewrites the
// first 16 pages and opens one more file, then says "ok".
const diffProg = `
import sys
b = bytearray(range(256)) * (16 << 12)
files = []
print("ok", flush=True)
for i, _ in enumerate(sys.stdin):
    for p in range(16):
        b[p * 4096] = (b[p * 4096] + 1) % 256
    files.append(open("/dev/null"))
    print("ok", flush=True)
`

// TestDiffRealCheckpoints dumps a program, lets it change 16 pages and
// open a file, dumps again, and diffs the two: the changed pages and the
// new fd show, and a checkpoint against itself shows nothing.
func TestDiffRealCheckpoints(t *testing.T) {
	needRoot(t)
	cmd := exec.Command("python3", "-c", diffProg)
	in, _ := cmd.StdinPipe()
	outPipe, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Skipf("python3: %v", err)
	}
	defer killChild(cmd)
	out := bufio.NewScanner(outPipe)
	out.Scan()
	pid := strconv.Itoa(cmd.Process.Pid)
	store := filepath.Join(t.TempDir(), "store")
	first := strings.TrimSpace(mustCkptfs(t, "dump", "-s", store, pid).stdout)
	in.Write([]byte("go\n"))
	out.Scan()
	second := strings.TrimSpace(mustCkptfs(t, "dump", "-s", store, pid).stdout)

	r := mustCkptfs(t, "diff", "--json", "-s", store, first, second)
	validate(t, "diff", r.stdout)
	var doc diffDoc
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Tasks) != 1 || doc.Tasks[0].Status != "changed" || doc.Tasks[0].PID != cmd.Process.Pid {
		t.Fatalf("tasks: %+v", doc.Tasks)
	}
	task := doc.Tasks[0]
	if task.PagesChanged < 16 || task.BytesChanged != int64(task.PagesChanged)*4096 {
		t.Errorf("changed %d pages (%d bytes), the program rewrote 16", task.PagesChanged, task.BytesChanged)
	}
	var opened bool
	for _, f := range task.FDs {
		opened = opened || f.Status == "added" && f.Path == "/dev/null"
	}
	if !opened {
		t.Errorf("the new fd is not shown: %+v", task.FDs)
	}
	var fdFile bool
	for _, p := range doc.Files.Added {
		fdFile = fdFile || strings.HasPrefix(p, "tasks/"+pid+"/fds/")
	}
	if !fdFile {
		t.Errorf("no new fds/ entry in the tree files: %+v", doc.Files)
	}

	text := mustCkptfs(t, "diff", "-s", store, first, second).stdout
	if !strings.Contains(text, "task "+pid+" (python3) changed") || !strings.Contains(text, " new: /dev/null") {
		t.Errorf("text diff:\n%s", text)
	}
	self := mustCkptfs(t, "diff", "--json", "-s", store, second, second).stdout
	var none diffDoc
	json.Unmarshal([]byte(self), &none)
	if none.PagesAdded+none.PagesChanged+none.PagesRemoved != 0 || len(none.Files.Changed) != 0 || none.Tasks[0].Status != "same" {
		t.Errorf("a checkpoint against itself: %s", self)
	}
	if r := ckptfs(t, "diff", "-s", store, first); r.code != exitUsage {
		t.Errorf("diff with one id: exit %d", r.code)
	}
}
