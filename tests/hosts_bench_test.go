package tests

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkHosts1GiB measures, for a 1 GiB program (hostmem: distinct
// pages), each as a ratio to a baseline measured in the same run, on two
// hosts of their own namespaces (hosts_test.go) with the S3 server in the
// test process:
//
//   - the first and the second dump (1/16 of the pages rewritten in
//     between) into the bucket, to the same into a local store on host A;
//   - ckptfs migrate PID --to the bucket on A, then mount and restore on
//     B as migrate prints it (restore, and in a second round restore
//     --lazy): the time from the start of migrate until
//     the program runs again on B (its first tick there), and the time it
//     did not run (the longest gap between two of its ticks, which carry
//     their time), to the same by hand: dump --kill into A's local store,
//     mount it, cp -a the checkpoint's tree to a directory B reaches
//     (the test's, standing for the copy to the other machine), restore
//     that on B.
//
// The machine is shared: every figure is the median of 3 runs
// (CKPTFS_BENCH_HOSTS_RUNS), each run a fresh server, hosts and
// programs; the runs alternate the order of migrate and by-hand. Run it
// alone: go test ./tests -run - -bench Hosts1GiB -benchtime 1x. It needs
// about 8 GiB of memory (tmpfs stores, the in-memory bucket, programs).
func BenchmarkHosts1GiB(b *testing.B) {
	mib := 1024
	if s := os.Getenv("CKPTFS_BENCH_HOSTS_MIB"); s != "" {
		mib, _ = strconv.Atoi(s)
	}
	runs := 3
	if s := os.Getenv("CKPTFS_BENCH_HOSTS_RUNS"); s != "" {
		runs, _ = strconv.Atoi(s)
	}
	fig := map[string][]float64{} // seconds
	for r := 0; r < runs; r++ {
		b.Run(fmt.Sprintf("run%d", r), func(b *testing.B) {
			for k, v := range hostsRun(b, mib, r%2 == 1) {
				fig[k] = append(fig[k], v)
			}
		})
	}
	med := func(k string) float64 {
		v := slices.Clone(fig[k])
		if len(v) == 0 {
			b.Fatalf("no figure %s", k)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	var lines []string
	for _, k := range slices.Sorted(maps.Keys(fig)) {
		lines = append(lines, fmt.Sprintf("  %-22s median %7.3fs of %v", k, med(k), fig[k]))
		b.ReportMetric(med(k), k+"-s")
	}
	ratios := []struct{ name, num, den string }{
		{"dump1-s3/local", "s3-dump1", "local-dump1"},
		{"dump2-s3/local", "s3-dump2", "local-dump2"},
		{"migrate-running/hand", "migrate-running", "hand-running"},
		{"migrate-frozen/hand", "migrate-stopped", "hand-stopped"},
		{"lazy-running/hand", "migrate-lazy-running", "hand-running"},
		{"lazy-frozen/hand", "migrate-lazy-stopped", "hand-stopped"},
	}
	for _, q := range ratios {
		x := med(q.num) / med(q.den)
		lines = append(lines, fmt.Sprintf("  %-22s %.3f (median %s / median %s)", q.name, x, q.num, q.den))
		b.ReportMetric(x, q.name)
	}
	b.Logf("%d MiB program, %d runs, medians:\n%s", mib, runs, strings.Join(lines, "\n"))
}

// hostsRun is one run of BenchmarkHosts1GiB: its figures in seconds.
func hostsRun(b *testing.B, mib int, handFirst bool) map[string]float64 {
	s := newHostsS3(b, "ckpt")
	a, hb := newHost(b, s, "a"), newHost(b, s, "b")
	fig := map[string]float64{}
	// Dumps: the same program, into A's local store, then into the bucket.
	p := a.startEvery(b, mib, 100, 16)
	for _, st := range []struct{ name, store string }{{"local", filepath.Join(a.home, "store")}, {"s3", "s3://ckpt/dumps"}} {
		for n := 1; n <= 2; n++ {
			if n == 2 {
				p.rewrite(b)
			}
			start := time.Now()
			out, errOut, err := a.ckptfsErr(b, "dump", "-v", "-s", st.store, itoa(p.Pid))
			if err != nil {
				b.Fatalf("dump -s %s: %v\n%s%s", st.store, err, out, errOut)
			}
			fig[fmt.Sprintf("%s-dump%d", st.name, n)] = time.Since(start).Seconds()
			b.Logf("dump %d into %s:\n%s", n, st.store, errOut)
		}
	}
	p.kill()
	a.run(b, "rm", "-rf", filepath.Join(a.home, "store"))
	subreaper(b)
	order := []string{"migrate", "migrate-lazy", "hand"}
	if handFirst {
		order = []string{"hand", "migrate-lazy", "migrate"}
	}
	for _, how := range order {
		p := a.startEvery(b, mib, 100, 16)
		p.waitTicks(b, 2)
		start := time.Now()
		var dir string // what B restores
		switch how {
		case "migrate", "migrate-lazy":
			out, errOut, err := a.ckptfsErr(b, "migrate", itoa(p.Pid), "--to", "s3://ckpt/migrate")
			if err != nil {
				b.Fatalf("migrate: %v\n%s%s", err, out, errOut)
			}
			id := lastLine(out)
			if !strings.Contains(errOut, "ckptfs restore /run/ckptfs-mnt/"+id) {
				b.Fatalf("migrate printed no restore command:\n%s", errOut)
			}
			b.Logf("migrate (%v):\n%s", time.Since(start), errOut)
			dir = filepath.Join(hb.mount(b, "s3://ckpt/migrate"), id)
		case "hand":
			store := filepath.Join(a.home, "store")
			out, errOut, err := a.ckptfsErr(b, "dump", "-s", store, "--kill", itoa(p.Pid))
			if err != nil {
				b.Fatalf("dump --kill: %v\n%s%s", err, out, errOut)
			}
			id := lastLine(out)
			mnt := a.mount(b, store)
			dir = filepath.Join(b.TempDir(), id) // reached by both hosts
			a.run(b, "cp", "-a", filepath.Join(mnt, id), dir)
			b.Logf("dump --kill, mount, cp -a: %v\n%s", time.Since(start), errOut)
		}
		waitGone(b, p.Pid)
		before := len(p.ticks())
		restoreStart := time.Now()
		args := []string{"restore", "-v", dir}
		var lazyLog string
		if how == "migrate-lazy" {
			lazyLog = filepath.Join(b.TempDir(), "lazy.log")
			args = []string{"restore", "-v", "--lazy", "--lazy-log", lazyLog, dir}
		}
		out, errOut, err := hb.ckptfsErr(b, args...)
		if err != nil {
			b.Fatalf("restore on b: %v\n%s%s", err, out, errOut)
		}
		b.Logf("%s: restore on b from %s (%v since the start, restore %v):\n%s", how, dir, time.Since(start), time.Since(restoreStart), errOut)
		pid, _ := strconv.Atoi(lastLine(out))
		restored(b, pid)
		lines := p.waitTicks(b, 1)
		at := tickTimes(lines)
		fig[how+"-running"] = time.UnixMilli(at[before]).Sub(start).Seconds()
		fig[how+"-stopped"] = longestGap(at)
		if lazyLog != "" {
			log := waitLazyServer(b, lazyLog)
			b.Logf("lazy page server: %s", lastLine(log))
			p.waitTicks(b, 1)
		}
		p.checkHealthy(b)
		stopRestored(pid)
		waitGone(b, pid)
		a.run(b, "rm", "-rf", filepath.Join(a.home, "store"))
		if how == "hand" {
			exec.Command("rm", "-rf", dir).Run()
		}
	}
	b.Logf("run: %v", fig)
	return fig
}

var tickAtRe = regexp.MustCompile(` tick \d+ at (\d+) `)

// tickTimes are the times (Unix ms) of hostmem's tick lines.
func tickTimes(lines []string) []int64 {
	var at []int64
	for _, l := range lines {
		m := tickAtRe.FindStringSubmatch(l + " ")
		if m == nil {
			continue
		}
		ms, _ := strconv.ParseInt(m[1], 10, 64)
		at = append(at, ms)
	}
	return at
}

// longestGap is the longest time, in seconds, between two ticks.
func longestGap(at []int64) float64 {
	var gap int64
	for i := 1; i < len(at); i++ {
		gap = max(gap, at[i]-at[i-1])
	}
	return float64(gap) / 1000
}
