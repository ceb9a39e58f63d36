package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRestorePythonPool: a python3 multiprocessing.Pool (its semaphores
// are POSIX semaphores mapped from /dev/shm files unlinked with no fd left;
// pipes and threads to its workers) and a POSIX shared memory segment
// (/dev/shm, mapped shared) is dumped with --kill mid-idle and restored,
// then finishes a map over the pool with correct results and finds the
// segment's bytes.
func TestRestorePythonPool(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3")
	}
	_, file, _, _ := runtime.Caller(0)
	dir := t.TempDir()
	p := startArgv(t, "pool", []string{"python3", filepath.Join(filepath.Dir(file), "progs", "pool.py"), filepath.Join(dir, "go")})
	pids := treePids(p.Pid)
	if len(pids) < 3 {
		t.Fatalf("tree %v, want the pool, 2 workers (and the resource tracker)", pids)
	}
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	id := lastLine(ckptfs(t, "dump", "-s", m.store, "--kill", itoa(p.Pid)))
	infos, _ := filepath.Glob(filepath.Join(m.mnt, id, "objects", "memfd-*", "info"))
	sems := 0
	for _, f := range infos {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), "sem.") {
			sems++
		}
	}
	if sems == 0 {
		t.Fatalf("no semaphore recorded as a memfd object (%d memfd objects)", len(infos))
	}
	t.Logf("%d semaphores recorded as memfd objects", sems)
	pid := p.Pid
	p.kill()
	for _, q := range pids {
		waitGone(t, q)
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	ckptfs(t, "restore", filepath.Join(m.mnt, id))
	t.Cleanup(func() {
		for _, q := range pids {
			unix.Kill(q, unix.SIGKILL)
		}
		waitGone(t, pid)
	})
	p.Pid = pid
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if l := p.waitLine(t, "pool result"); l != "pool result ok 332833500" {
		b, _ := os.ReadFile(p.Out)
		t.Fatalf("after restore: %q\n%s", l, b)
	}
	if l := p.waitLine(t, "pool shm"); !strings.HasSuffix(l, " ok") {
		t.Fatalf("after restore: %q", l)
	}
	p.waitLine(t, "pool done")
	for _, l := range strings.Split(strings.TrimSpace(func() string { b, _ := os.ReadFile(p.Out); return string(b) }()), "\n") {
		if strings.Contains(l, "Error") || strings.Contains(l, "Traceback") {
			t.Fatalf("pool printed %q", l)
		}
	}
}
