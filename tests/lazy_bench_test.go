package tests

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkLazyRestore restores one checkpoint of a program with 1 GiB
// (CKPTFS_LAZY_BENCH_GIB=8: 8 GiB) of touched memory from a mount, eager
// then lazy, caches dropped before each, and reports the time until the
// program runs again (restore returned) and, for lazy, until every page is
// in (the page server's "all pages in" log line), as ratios to the eager
// restore of the same run. The program re-checks all its memory every
// 100 ms, so it faults in pages while the background pass runs.
func BenchmarkLazyRestore(b *testing.B) {
	gib := 1
	if s := os.Getenv("CKPTFS_LAZY_BENCH_GIB"); s != "" {
		gib, _ = strconv.Atoi(s)
	}
	for i := 0; i < b.N; i++ {
		p := startProgram(b, "static", gib<<10)
		_, dir, _ := dumpLazyCase(b, p)
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

		dropCaches(b)
		t0 := time.Now()
		ckptfs(b, "restore", dir)
		eager := time.Since(t0)
		unix.Kill(p.Pid, unix.SIGKILL)
		waitGone(b, p.Pid)

		dropCaches(b)
		t0 = time.Now()
		pid, logPath, phases := lazyRestoreV(b, dir)
		run := time.Since(t0)
		log := waitLazyServer(b, logPath)
		all := logTime(b, log, "all pages in, ").Sub(t0)
		unix.Kill(pid, unix.SIGKILL)
		waitGone(b, pid)
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

		fmt.Fprintf(os.Stderr, "lazy restore phases:\n%s\npage server log:\n%s\n", phases, log)
		b.ReportMetric(eager.Seconds()*1000, "eager-ms")
		b.ReportMetric(run.Seconds()*1000, "lazy-run-ms")
		b.ReportMetric(all.Seconds()*1000, "lazy-all-ms")
		b.ReportMetric(run.Seconds()/eager.Seconds(), "run/eager")
		b.ReportMetric(all.Seconds()/eager.Seconds(), "all/eager")
		b.Logf("%d GiB: eager restore %v; lazy: running after %v (%.3fx), all pages in after %v (%.2fx)",
			gib, eager, run, run.Seconds()/eager.Seconds(), all, all.Seconds()/eager.Seconds())
	}
}

// logTime is the time stamp of the first line of a page server log
// holding s.
func logTime(b testing.TB, log, s string) time.Time {
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		l := strings.TrimPrefix(sc.Text(), "ckptfs lazy-serve: ")
		if !strings.Contains(l, s) || len(l) < 26 {
			continue
		}
		t, err := time.ParseInLocation("2006/01/02 15:04:05.000000", l[:26], time.Local)
		if err != nil {
			b.Fatalf("page server log line %q: %v", l, err)
		}
		return t
	}
	b.Fatalf("page server log has no %q:\n%s", s, log)
	return time.Time{}
}
