package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func dropCaches(b *testing.B) {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		b.Fatalf("drop caches: %v", err)
	}
}

// BenchmarkRestore1GiBFromMount restores a program with 1 GiB of touched
// memory from a mounted checkpoint and reports the time until it runs again
// (ckptfs restore returns once every thread is released) as a ratio to
// `cat` of the same pages files from the mount to /dev/null, both with cold
// caches, in the same run.
func BenchmarkRestore1GiBFromMount(b *testing.B) {
	for i := 0; i < b.N; i++ {
		p := startProgram(b, "static", 1024)
		m := mountStore(b, filepath.Join(b.TempDir(), "store"))
		id := lastLine(ckptfs(b, "dump", "-s", m.store, "--kill", itoa(p.Pid)))
		waitGone(b, p.Pid)
		dir := filepath.Join(m.mnt, id)
		pages, _ := filepath.Glob(filepath.Join(dir, "tasks", "*", "vmas", "*", "pages"))

		dropCaches(b)
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
		t0 := time.Now()
		ckptfs(b, "restore", dir)
		restore := time.Since(t0)
		unix.Kill(p.Pid, unix.SIGKILL)
		waitGone(b, p.Pid)
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

		dropCaches(b)
		cat := exec.Command("cat", pages...)
		t0 = time.Now()
		if err := cat.Run(); err != nil {
			b.Fatal(err)
		}
		catTime := time.Since(t0)
		b.ReportMetric(restore.Seconds()*1000, "restore-ms")
		b.ReportMetric(catTime.Seconds()*1000, "cat-ms")
		b.ReportMetric(restore.Seconds()/catTime.Seconds(), "restore/cat")
		b.Logf("restore (to running) %v, cat of the same pages files %v", restore, catTime)
	}
}
