package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRestorePidfds: a Go program holding os/exec's pidfd of a running
// child, a pidfd of a child it already reaped and one of its parent (the
// test, outside the tree) is dumped with --kill and restored: the child
// is signalled and waited through its pidfd again, and the other two read
// as pidfds of exited processes.
func TestRestorePidfds(t *testing.T) {
	bin := filepath.Join(built(t), "gopidfd")
	if _, err := os.Stat(bin); err != nil {
		cmd := exec.Command("go", "build", "-o", bin, "./progs/gopidfd")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build gopidfd: %v\n%s", err, out)
		}
	}
	dir := t.TempDir()
	p := startArgv(t, "gopidfd", []string{bin, filepath.Join(dir, "go")})
	// The program may tick before its child exists: wait for the child.
	kids := treePids(p.Pid)
	for deadline := time.Now().Add(10 * time.Second); len(kids) != 2 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		kids = treePids(p.Pid)
	}
	if len(kids) != 2 {
		t.Fatalf("tree %v, want gopidfd and its sleep", kids)
	}
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	id := lastLine(ckptfs(t, "dump", "-s", m.store, "--kill", itoa(p.Pid)))
	pid := p.Pid
	p.kill()
	waitGone(t, pid)
	waitGone(t, kids[1])
	kinds := map[string]int{}
	ents, _ := filepath.Glob(filepath.Join(m.mnt, id, "tasks", itoa(pid), "fdinfo", "*"))
	for _, e := range ents {
		b, _ := os.ReadFile(e)
		if fdinfoValue(string(b), "kind") == "pidfd" {
			kinds[fdinfoValue(string(b), "Pid")]++
		}
	}
	if kinds[itoa(kids[1])] != 1 || kinds["-1"] != 2 {
		t.Fatalf("pidfds by Pid %v, want one of %d and two of -1", kinds, kids[1])
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	ckptfs(t, "restore", filepath.Join(m.mnt, id))
	t.Cleanup(func() {
		unix.Kill(kids[1], unix.SIGKILL)
		unix.Kill(pid, unix.SIGKILL)
		waitGone(t, pid)
	})
	p.Pid = pid
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p.waitLine(t, "gopidfd done")
	b, _ := os.ReadFile(p.Out)
	for _, want := range []string{"gopidfd reaped exited\n", "gopidfd parent exited\n", "gopidfd child signal: terminated\n"} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("after restore, no %q:\n%s", want, b)
		}
	}
}
