package restorer

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkRestore1GiB restores a static program with 1 GiB of touched
// memory and reports the restore time as a ratio to `cat` of the same
// pages files to /dev/null, measured in the same run, and to a restore
// without page verification (Options.NoVerifyPages), alternating.
func BenchmarkRestore1GiB(b *testing.B) {
	p := start(b, "static", 1024)
	dir := dumpKill(b, p)
	pages, _ := filepath.Glob(filepath.Join(dir, "tasks", "*", "vmas", "*", "pages"))
	cat := func() time.Duration {
		t0 := time.Now()
		cmd := exec.Command("cat", pages...)
		devnull, _ := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		defer devnull.Close()
		cmd.Stdout = devnull
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	cat() // page cache warm for both
	debug.FreeOSMemory()
	var catTotal, restoreTotal, noVerifyTotal time.Duration
	run := func(opts Options) time.Duration {
		t0 := time.Now()
		pid, err := Restore(dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		d := time.Since(t0)
		b.StopTimer()
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
		b.StartTimer()
		return d
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		catTotal += cat()
		b.StartTimer()
		restoreTotal += run(Options{})
		b.StopTimer()
		noVerifyTotal += run(Options{NoVerifyPages: true})
		b.StartTimer()
	}
	b.ReportMetric(float64(restoreTotal.Milliseconds())/float64(b.N), "restore-ms")
	b.ReportMetric(float64(catTotal.Milliseconds())/float64(b.N), "cat-ms")
	b.ReportMetric(float64(restoreTotal)/float64(catTotal), "x-cat")
	b.ReportMetric(float64(noVerifyTotal.Milliseconds())/float64(b.N), "noverify-ms")
	b.ReportMetric(float64(restoreTotal)/float64(noVerifyTotal), "x-noverify")
}
