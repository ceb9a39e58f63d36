package tests

import (
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkTCPFreeze measures the freeze time `dump --tcp-established`
// adds per established connection: a parent and child with 200 loopback
// connections between them (400 sockets in repair mode, 1000 bytes queued
// each way on each) against the same two processes without any socket,
// measured in the same run (median of 3 dumps each). Run with -benchtime 1x.
func BenchmarkTCPFreeze(b *testing.B) {
	const conns = 200
	n := newNetns(b)
	freeze := func(count int) time.Duration {
		p := startArgv(b, "tcpmany", n.argv(buildProg(b, "tcpmany"), itoa(count)))
		var ds []time.Duration
		for i := 0; i < 3; i++ {
			store := filepath.Join(b.TempDir(), "store")
			ds = append(ds, dumpMeasured(b, store, p.Pid, "--tcp-established").freeze)
		}
		p.kill()
		slices.Sort(ds)
		return ds[1]
	}
	for i := 0; i < b.N; i++ {
		base := freeze(0)
		with := freeze(conns)
		b.ReportMetric(float64(base.Microseconds()), "base-freeze-µs")
		b.ReportMetric(float64(with.Microseconds()), "freeze-µs")
		b.ReportMetric(float64((with-base).Microseconds())/conns, "added-µs/conn")
		b.ReportMetric(float64(with)/float64(base), "ratio")
	}
}
