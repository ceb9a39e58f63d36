package tests

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The tracking benchmarks (issue 12), each against a baseline measured
// in the same run. Run them one at a time with -benchtime 1x; the 4 GiB
// one needs about 10 GiB free (CKPTFS_BENCH_TRACK_MIB sets the size).

var frozenTotalRe = regexp.MustCompile(`frozen (\S+), total (\S+)`)

type trackFigures struct {
	frozen, total time.Duration
	said          string
}

// dumpFigured runs ckptfs dump -s store [extra...] pid and returns what it
// says it took, frozen and in total.
func dumpFigured(b *testing.B, store string, pid int, extra ...string) trackFigures {
	b.Helper()
	args := append(append([]string{"dump", "-s", store}, extra...), itoa(pid))
	out, errOut, err := ckptfsErr(b, args...)
	if err != nil {
		b.Fatalf("ckptfs %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	m := frozenTotalRe.FindStringSubmatch(errOut)
	if m == nil {
		b.Fatalf("dump said %q", errOut)
	}
	f := trackFigures{said: errOut}
	f.frozen, _ = time.ParseDuration(m[1])
	f.total, _ = time.ParseDuration(m[2])
	return f
}

// BenchmarkTrackedRedump4GiB: a second dump of a 4 GiB process that
// rewrote 1% of its pages, tracked against untracked, in the same run.
// Goal: frozen and total each at most 0.1x.
func BenchmarkTrackedRedump4GiB(b *testing.B) {
	requireAsyncWP(b)
	mib := 4096
	if s := os.Getenv("CKPTFS_BENCH_TRACK_MIB"); s != "" {
		mib, _ = strconv.Atoi(s)
	}
	for i := 0; i < b.N; i++ {
		h := startMemhog(b, mib)
		pid := h.cmd.Process.Pid
		store := filepath.Join(b.TempDir(), "store")
		b.Cleanup(func() { killTrackers(b, store) })
		dumpFigured(b, store, pid, "--track")
		pages := mib * 256 / 100
		h.touch(b, pages)
		plain := dumpFigured(b, store, pid, "-v")
		h.touch(b, pages) // the same pages again: 1% written since the tracked dump
		tracked := dumpFigured(b, store, pid, "--track", "-v")
		if !strings.Contains(tracked.said, "unwritten pages taken from") {
			b.Fatalf("the tracked dump did not track:\n%s", tracked.said)
		}
		b.ReportMetric(plain.frozen.Seconds()*1000, "untracked-frozen-ms")
		b.ReportMetric(plain.total.Seconds()*1000, "untracked-total-ms")
		b.ReportMetric(tracked.frozen.Seconds()*1000, "tracked-frozen-ms")
		b.ReportMetric(tracked.total.Seconds()*1000, "tracked-total-ms")
		b.ReportMetric(tracked.frozen.Seconds()/plain.frozen.Seconds(), "frozen-ratio")
		b.ReportMetric(tracked.total.Seconds()/plain.total.Seconds(), "total-ratio")
		b.Logf("%d MiB, %d pages rewritten: untracked frozen %v total %v; tracked frozen %v total %v (%.3fx, %.3fx)\n%s",
			mib, pages, plain.frozen, plain.total, tracked.frozen, tracked.total,
			tracked.frozen.Seconds()/plain.frozen.Seconds(), tracked.total.Seconds()/plain.total.Seconds(), tracked.said)
	}
}

// wloop drives tests/progs/wloop.c.
type wloop struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func (w *wloop) loop(b *testing.B, rounds int) time.Duration {
	b.Helper()
	if _, err := io.WriteString(w.in, "loop "+itoa(rounds)+"\n"); err != nil {
		b.Fatal(err)
	}
	line, err := w.out.ReadString('\n')
	ns, perr := strconv.ParseInt(strings.TrimPrefix(strings.TrimSpace(line), "ns "), 10, 64)
	if err != nil || perr != nil {
		b.Fatalf("wloop: %q %v", line, err)
	}
	return time.Duration(ns)
}

// startWloop starts wloop over mib MiB and waits until it is ready.
func startWloop(b *testing.B, bin string, mib int) *wloop {
	b.Helper()
	cmd := exec.Command(bin, itoa(mib))
	in, _ := cmd.StdinPipe()
	outPipe, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	w := &wloop{cmd: cmd, in: in, out: bufio.NewReader(outPipe)}
	if line, err := w.out.ReadString('\n'); err != nil || line != "ready\n" {
		b.Fatalf("wloop: %q %v", line, err)
	}
	return w
}

// BenchmarkTrackedWriteLoop: the speed of a program rewriting 256 MiB
// over and over while write-protected by tracking (after its first write
// to each page) against the same program untracked, in the same run: two
// copies, one tracked, measured in turns so that both see the same load
// (the CPUs are shared). Goal: at most 1.1x.
func BenchmarkTrackedWriteLoop(b *testing.B) {
	requireAsyncWP(b)
	bin := buildProg(b, "wloop", "-O2")
	for i := 0; i < b.N; i++ {
		plain, tracked := startWloop(b, bin, 256), startWloop(b, bin, 256)
		plain.loop(b, 1)
		tracked.loop(b, 1)
		store := filepath.Join(b.TempDir(), "store")
		b.Cleanup(func() { killTrackers(b, store) })
		f := dumpFigured(b, store, tracked.cmd.Process.Pid, "--track")
		if !strings.Contains(f.said, "1 process(es) write-protected for the next dump") {
			b.Fatalf("dump --track said %q", f.said)
		}
		base := plain.loop(b, 1)
		first := tracked.loop(b, 1) // the first write to each page after the arm
		const rounds, turns = 2, 12
		bestPlain, bestTracked := time.Duration(1<<63-1), time.Duration(1<<63-1)
		for k := 0; k < turns; k++ {
			bestPlain = min(bestPlain, plain.loop(b, rounds))
			bestTracked = min(bestTracked, tracked.loop(b, rounds))
		}
		b.ReportMetric(float64(bestPlain.Microseconds())/1000, "untracked-ms")
		b.ReportMetric(float64(bestTracked.Microseconds())/1000, "tracked-ms")
		b.ReportMetric(bestTracked.Seconds()/bestPlain.Seconds(), "tracked/untracked")
		b.ReportMetric(first.Seconds()/base.Seconds(), "first-round/untracked")
		b.Logf("%d rounds over 256 MiB, best of %d turns: untracked %v, tracked %v (%.3fx); first round after the arm %v vs %v untracked (%.2fx)",
			rounds, turns, bestPlain, bestTracked, bestTracked.Seconds()/bestPlain.Seconds(), first, base, first.Seconds()/base.Seconds())
	}
}

var preCopyPassRe = regexp.MustCompile(`pre-copy pass \d+: copied (\d+) pages while the tree ran \(frozen (\S+)\)`)

// BenchmarkPreCopy1GiB: migration dumps (--kill: the tree stays frozen
// until the commit) of a 1 GiB process that keeps rewriting 0.1% of its
// pages every 20 ms: the final freeze of --pre-copy (and all its passes'
// freezes summed) against a plain --kill dump of another such process in
// the same run.
func BenchmarkPreCopy1GiB(b *testing.B) {
	requireAsyncWP(b)
	for i := 0; i < b.N; i++ {
		store := filepath.Join(b.TempDir(), "store")
		b.Cleanup(func() { killTrackers(b, store) })
		dumpWriting := func(extra ...string) trackFigures {
			h := startMemhog(b, 1024)
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() { // the program's writes while it is migrated
				defer close(done)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := io.WriteString(h.in, "touch 262\n"); err != nil {
						return
					}
					if _, err := h.out.ReadString('\n'); err != nil {
						return
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
			time.Sleep(100 * time.Millisecond)
			f := dumpFigured(b, store, h.cmd.Process.Pid, append(extra, "--kill")...)
			close(stop)
			<-done
			return f
		}
		// Pre-copy first: the plain dump then finds every page in the
		// store already (same content), which favours the baseline.
		pre := dumpWriting("--pre-copy")
		plain := dumpWriting()
		sum := pre.frozen
		passes := preCopyPassRe.FindAllStringSubmatch(pre.said, -1)
		for _, m := range passes {
			d, _ := time.ParseDuration(m[2])
			sum += d
		}
		if len(passes) == 0 {
			b.Fatalf("no pre-copy pass:\n%s", pre.said)
		}
		b.ReportMetric(plain.frozen.Seconds()*1000, "plain-frozen-ms")
		b.ReportMetric(pre.frozen.Seconds()*1000, "final-frozen-ms")
		b.ReportMetric(pre.frozen.Seconds()/plain.frozen.Seconds(), "final-frozen/plain")
		b.ReportMetric(sum.Seconds()/plain.frozen.Seconds(), "all-freezes/plain")
		b.Logf("plain --kill dump frozen %v; pre-copy: %d passes, final freeze %v (%.3fx), all freezes %v (%.3fx), total %v\n%s",
			plain.frozen, len(passes), pre.frozen, pre.frozen.Seconds()/plain.frozen.Seconds(), sum, sum.Seconds()/plain.frozen.Seconds(), pre.total, pre.said)
	}
}
