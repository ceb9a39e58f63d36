package tests

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/proc"
)

// The freeze benchmarks measure how long `ckptfs dump` keeps a program
// frozen and how much memory the dump itself takes, at sizes where the
// per-page, per-fd, per-thread and per-process costs show, each against a
// baseline measured in the same run: a raw process_vm_readv copy of the
// same memory, or the time the program takes to set itself up from exec.
// Run them one at a time, with -benchtime 1x: the 4 GiB one needs about
// 12 GiB of free memory, the 8 GiB one (CKPTFS_BENCH_8GIB=1) about 20.

// dumpFigures is what one `ckptfs dump` run measured.
type dumpFigures struct {
	id       string
	freeze   time.Duration // as the dump reports it
	elapsed  time.Duration
	maxRSS   int64 // the dump process's peak RSS (getrusage), bytes
	peakAnon int64 // its peak RssAnon (sampled every 20 ms), bytes
}

var frozenRe = regexp.MustCompile(`frozen (\S+), total`)

// dumpMeasured runs `ckptfs dump -s store [extra...] pid` as a child and
// measures it.
func dumpMeasured(tb testing.TB, store string, pid int, extra ...string) dumpFigures {
	tb.Helper()
	args := append(append([]string{"dump", "-s", store}, extra...), itoa(pid))
	cmd := exec.Command(filepath.Join(built(tb), "ckptfs"), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	var peak atomic.Int64
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			b, err := os.ReadFile("/proc/" + itoa(cmd.Process.Pid) + "/status")
			if err != nil {
				continue
			}
			if n := statusKiB(proc.KeyValues(b)["RssAnon"]) << 10; n > peak.Load() {
				peak.Store(n)
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	f := dumpFigures{elapsed: time.Since(t0), peakAnon: peak.Load()}
	if err != nil {
		tb.Fatalf("ckptfs %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		f.maxRSS = ru.Maxrss << 10
	}
	m := frozenRe.FindStringSubmatch(errOut.String())
	if m == nil {
		tb.Fatalf("dump said %q", errOut.String())
	}
	f.freeze, _ = time.ParseDuration(m[1])
	f.id = lastLine(out.String())
	return f
}

// statusKiB reads a /proc/<pid>/status value such as "1234 kB" (0 if none).
func statusKiB(s string) int64 {
	v, _ := strconv.ParseInt(strings.Fields(s + " 0")[0], 10, 64)
	return v
}

// report reports a dump's figures, the freeze also as a ratio to base.
func (f dumpFigures) report(b *testing.B, prefix string, base time.Duration, baseName string) {
	b.ReportMetric(f.freeze.Seconds()*1000, prefix+"freeze-ms")
	b.ReportMetric(f.freeze.Seconds()/base.Seconds(), prefix+"freeze/"+baseName)
	b.ReportMetric(float64(f.maxRSS>>20), prefix+"dump-maxrss-MiB")
	b.ReportMetric(float64(f.peakAnon>>20), prefix+"dump-rssanon-MiB")
	b.Logf("%sdump %v, frozen %v (%.2fx %s %v), dump peak RSS %d MiB, peak RssAnon %d MiB",
		prefix, f.elapsed, f.freeze, f.freeze.Seconds()/base.Seconds(), baseName, base, f.maxRSS>>20, f.peakAnon>>20)
}

// restoreChecked kills p, restores checkpoint dir from the mount and lets
// the restored program check itself for two ticks.
func restoreChecked(tb testing.TB, p *program, dir string) {
	tb.Helper()
	p.kill()
	waitGone(tb, p.Pid)
	// The program ran on after the dump: the restored one writes its
	// ticks where the checkpoint's offset says, over the later ones.
	// Blanked (zeros, same size: a restore refuses a file that shrank),
	// the file counts only the restored ticks.
	st, err := os.Stat(p.Out)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Truncate(p.Out, 0); err != nil {
		tb.Fatal(err)
	}
	if err := os.Truncate(p.Out, st.Size()); err != nil {
		tb.Fatal(err)
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	out, errOut, err := ckptfsErr(tb, "restore", dir)
	if err != nil {
		tb.Fatalf("restore: %v\n%s%s", err, out, errOut)
	}
	defer func() {
		unix.Kill(p.Pid, unix.SIGKILL)
		waitGone(tb, p.Pid)
	}()
	p.waitTicks(tb, 2)
	p.checkHealthy(tb)
}

// setupTime runs argv until it prints its first line (a tick printed once
// it is set up) and returns how long that took.
func setupTime(tb testing.TB, argv []string) time.Duration {
	tb.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	setup := time.Since(t0)
	unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
	cmd.Wait()
	if err != nil || !strings.HasSuffix(line, " ok\n") {
		tb.Fatalf("%s printed %q (%v)", argv[0], line, err)
	}
	return setup
}

// BenchmarkFreeze1GiB dumps a self-checking program with 1 GiB of touched
// memory twice, with --mem-budget 2048 (all pages held in memory) and with
// the default 256 MiB budget (768 MiB through the spill file), against a
// raw process_vm_readv copy of its memory, then restores the second
// checkpoint and lets the program check its memory.
func BenchmarkFreeze1GiB(b *testing.B) {
	for i := 0; i < b.N; i++ {
		p := startProgram(b, "static", 1024)
		raw, _ := rawCopy(b, p.Pid)
		m := mountStore(b, filepath.Join(b.TempDir(), "store"))
		inMemory := dumpMeasured(b, m.store, p.Pid, "--mem-budget", "2048")
		spilled := dumpMeasured(b, m.store, p.Pid)
		b.ReportMetric(raw.Seconds()*1000, "raw-copy-ms")
		inMemory.report(b, "budget2048-", raw, "raw")
		spilled.report(b, "", raw, "raw")
		restoreChecked(b, p, filepath.Join(m.mnt, spilled.id))
	}
}

// BenchmarkFreeze4GiB dumps a process with 4 GiB of distinct touched pages
// with the default budget (all but 256 MiB go through the spill file).
func BenchmarkFreeze4GiB(b *testing.B) { benchFreezeMemhog(b, 4096) }

// BenchmarkFreeze8GiB is BenchmarkFreeze4GiB at 8 GiB, run only with
// CKPTFS_BENCH_8GIB=1 (it needs about 20 GiB of free memory).
func BenchmarkFreeze8GiB(b *testing.B) {
	if os.Getenv("CKPTFS_BENCH_8GIB") == "" {
		b.Skip("needs about 20 GiB of free memory: set CKPTFS_BENCH_8GIB=1")
	}
	benchFreezeMemhog(b, 8192)
}

func benchFreezeMemhog(b *testing.B, mib int) {
	for i := 0; i < b.N; i++ {
		h := startMemhog(b, mib)
		pid := h.cmd.Process.Pid
		raw, _ := rawCopy(b, pid)
		f := dumpMeasured(b, filepath.Join(b.TempDir(), "store"), pid)
		b.ReportMetric(raw.Seconds()*1000, "raw-copy-ms")
		f.report(b, "", raw, "raw")
	}
}

// BenchmarkFreeze10000FDs dumps a program holding 10,000 fds (7,000 opens
// of one file at their own offsets, 1,000 dups sharing them, 1,000 pipes
// with a byte each) against the time it takes to open them from exec,
// then restores it and lets it check every offset, dup and pipe.
func BenchmarkFreeze10000FDs(b *testing.B) {
	argv := []string{buildProg(b, "manyfds"), "10000", "/etc/passwd"}
	for i := 0; i < b.N; i++ {
		setup := setupTime(b, argv)
		p := startArgv(b, "manyfds", argv)
		m := mountStore(b, filepath.Join(b.TempDir(), "store"))
		f := dumpMeasured(b, m.store, p.Pid)
		b.ReportMetric(setup.Seconds()*1000, "setup-ms")
		f.report(b, "", setup, "setup")
		restoreChecked(b, p, filepath.Join(m.mnt, f.id))
	}
}

// BenchmarkFreeze200Threads dumps a program of 200 threads against the
// time it takes to start them from exec.
func BenchmarkFreeze200Threads(b *testing.B) {
	argv := []string{buildProg(b, "manythreads", "-lpthread"), "200"}
	for i := 0; i < b.N; i++ {
		setup := setupTime(b, argv)
		p := startArgv(b, "manythreads", argv)
		f := dumpMeasured(b, filepath.Join(b.TempDir(), "store"), p.Pid)
		b.ReportMetric(setup.Seconds()*1000, "setup-ms")
		f.report(b, "", setup, "setup")
		p.waitTicks(b, 2)
		p.checkHealthy(b)
	}
}

// BenchmarkFreezeTree500 dumps a tree of 500 processes (forktree: a parent
// and 499 children, each with a socketpair to it) against the time the
// tree takes to set itself up from exec.
func BenchmarkFreezeTree500(b *testing.B) {
	argv := []string{buildProg(b, "forktree"), "499"}
	for i := 0; i < b.N; i++ {
		setup := setupTime(b, argv)
		p := startArgv(b, "forktree", argv)
		if n := len(treePids(p.Pid)); n != 500 {
			b.Fatalf("tree has %d processes, want 500", n)
		}
		f := dumpMeasured(b, filepath.Join(b.TempDir(), "store"), p.Pid)
		b.ReportMetric(setup.Seconds()*1000, "setup-ms")
		f.report(b, "", setup, "setup")
		p.waitTicks(b, 2)
		p.checkHealthy(b)
		for _, pid := range treePids(p.Pid)[1:] {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}
