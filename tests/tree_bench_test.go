package tests

import (
	"bufio"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkTree100 dumps and restores a tree of a parent and 100 children,
// each child with a socketpair to the parent and all sharing a pipe, and
// reports the dump's freeze, the whole dump and the restore (from a warm
// mount, until every process runs again) against the time the program
// itself takes to set the same tree up from exec (fork, socketpair, one
// round trip per child), measured in the same run.
func BenchmarkTree100(b *testing.B) {
	const children = 100
	bin := buildProg(b, "forktree")
	frozen := regexp.MustCompile(`frozen (\S+), total`)
	for i := 0; i < b.N; i++ {
		// Baseline: exec to the first tick, which comes once every child
		// answered once.
		cmd := exec.Command(bin, itoa(children))
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		setup := time.Since(t0)
		if err != nil || !strings.HasSuffix(line, " ok\n") {
			b.Fatalf("forktree printed %q (%v)", line, err)
		}
		unix.Kill(cmd.Process.Pid, unix.SIGKILL)
		cmd.Wait()

		p := startArgv(b, "forktree", []string{bin, itoa(children)})
		pids := treePids(p.Pid)
		if len(pids) != children+1 {
			b.Fatalf("tree has %d processes, want %d", len(pids), children+1)
		}
		m := mountStore(b, filepath.Join(b.TempDir(), "store"))
		t0 = time.Now()
		stdout, stderr, err := ckptfsErr(b, "dump", "-s", m.store, "--kill", itoa(p.Pid))
		dump := time.Since(t0)
		if err != nil {
			b.Fatalf("dump: %v\n%s", err, stderr)
		}
		fm := frozen.FindStringSubmatch(stderr)
		if fm == nil {
			b.Fatalf("dump said %q", stderr)
		}
		freeze, _ := time.ParseDuration(fm[1])
		for _, pid := range pids {
			waitGone(b, pid)
		}
		dir := filepath.Join(m.mnt, lastLine(stdout))
		exec.Command("cat", dir+"/info").Run() // warm: the checkpoint is rendered
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
		t0 = time.Now()
		ckptfs(b, "restore", dir)
		restore := time.Since(t0)
		p.waitTicks(b, 2)
		p.checkHealthy(b)
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		for _, pid := range pids {
			waitGone(b, pid)
		}
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

		ms := func(d time.Duration) float64 { return d.Seconds() * 1000 }
		b.ReportMetric(ms(setup), "setup-ms")
		b.ReportMetric(ms(freeze), "freeze-ms")
		b.ReportMetric(ms(dump), "dump-ms")
		b.ReportMetric(ms(restore), "restore-ms")
		b.ReportMetric(restore.Seconds()/setup.Seconds(), "restore/setup")
		b.ReportMetric(freeze.Seconds()/setup.Seconds(), "freeze/setup")
		b.Logf("%d processes: setup from exec %v; dump %v (frozen %v); restore %v", children+1, setup, dump, freeze, restore)
	}
}
