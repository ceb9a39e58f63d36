package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRestoreFDAboveLimit: a program that holds fd 200 and then lowered
// its own RLIMIT_NOFILE to 32 (soft and hard) is dumped with --kill and
// restored: the fd is installed first, the limit set after, and the
// program finds both as it left them.
func TestRestoreFDAboveLimit(t *testing.T) {
	dir := t.TempDir()
	p := startArgv(t, "lowlimit", []string{buildProg(t, "lowlimit"), filepath.Join(dir, "go")})
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	id := lastLine(ckptfs(t, "dump", "-s", m.store, "--kill", itoa(p.Pid)))
	pid := p.Pid
	p.kill()
	waitGone(t, pid)
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	ckptfs(t, "restore", filepath.Join(m.mnt, id))
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		waitGone(t, pid)
	})
	p.Pid = pid
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if l := p.waitLine(t, "lowlimit fd200"); !strings.HasSuffix(l, "fd200 open limit 32/32") {
		t.Fatalf("after restore: %q", l)
	}
	p.waitLine(t, "lowlimit done")
}
