package tests

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The tests of checkpoints moving between hosts (hosts_test.go): dumped
// on host A into a bucket and restored on host B, two hosts dumping into
// one bucket at once, copies sending only what the bucket lacks, a lazy
// restore from the bucket, and migrate --to through the bucket.

// restoreOn restores dir on h and returns the pid it printed; the program
// is killed when the test ends. With lazy, the page server's log goes to
// logPath and is waited for.
func restoreOn(t *testing.T, h *host, dir string, lazy bool) int {
	t.Helper()
	args := []string{"restore", dir}
	var logPath string
	if lazy {
		logPath = filepath.Join(t.TempDir(), "lazy.log")
		args = []string{"restore", "--lazy", "--lazy-log", logPath, dir}
	}
	out, errOut, err := h.ckptfsErr(t, args...)
	if err != nil {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("on %s: ckptfs %s: %v\n%s%s\n%s", h.name, strings.Join(args, " "), err, out, errOut, b)
	}
	pid, err := strconv.Atoi(lastLine(out))
	if err != nil {
		t.Fatalf("on %s: restore printed %q", h.name, out)
	}
	restored(t, pid)
	if lazy {
		if log := waitLazyServer(t, logPath); !strings.Contains(log, "all pages in, ") {
			t.Fatalf("lazy page server on %s:\n%s", h.name, log)
		}
	}
	h.owns(t, pid)
	return pid
}

// owns fails unless pid runs in h's network and mount namespaces.
func (h *host) owns(t testing.TB, pid int) {
	t.Helper()
	for _, ns := range []string{"net", "mnt"} {
		want, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", h.holder.Process.Pid, ns))
		got, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
		if got == "" || got != want {
			t.Fatalf("pid %d runs in %s namespace %q, want host %s's %q", pid, ns, got, h.name, want)
		}
	}
}

// resumes checks that p, restored, goes on ticking with good memory, and
// kills it.
func (p *program) resumes(t *testing.T, before int) {
	t.Helper()
	lines := p.waitTicks(t, 3)
	p.checkHealthy(t)
	if !strings.Contains(lines[before], " tick ") {
		t.Fatalf("unexpected line %q", lines[before])
	}
	stopRestored(p.Pid)
	waitGone(t, p.Pid)
}

// subreaper makes this process the reaper of the programs restored by
// the test (their restore exits) until the test ends.
func subreaper(t testing.TB) {
	setSubreaper(true)
	t.Cleanup(func() { setSubreaper(false) })
}

func setSubreaper(on bool) {
	v := 0
	if on {
		v = 1
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, uintptr(v), 0, 0, 0)
}

// TestHostsDumpRestore: a program on host A is dumped into the bucket
// (and killed); host B, which sees neither A's local files nor its cache,
// mounts the bucket and restores it, and again with --lazy: it resumes
// with its memory intact each time, in B's namespaces.
func TestHostsDumpRestore(t *testing.T) {
	s := newHostsS3(t, "ckpt")
	a, b := newHost(t, s, "a"), newHost(t, s, "b")
	a.private(t, b)
	b.private(t, a)
	remote := "s3://ckpt/hosts"
	p := a.start(t, 64, 100)
	a.owns(t, p.Pid)
	p.waitTicks(t, 1)
	id := lastLine(a.ckptfs(t, "dump", "-s", remote, "--kill", itoa(p.Pid)))
	waitGone(t, p.Pid)
	subreaper(t)
	mnt := b.mount(t, remote)
	for _, lazy := range []bool{false, true} {
		before := len(p.ticks())
		start := time.Now()
		if pid := restoreOn(t, b, filepath.Join(mnt, id), lazy); pid != p.Pid {
			t.Fatalf("restore on b: pid %d, want %d", pid, p.Pid)
		}
		t.Logf("restored on b (lazy %v) in %v", lazy, time.Since(start))
		p.resumes(t, before)
	}
}

// TestHostsConcurrentDumps: a program on each host, both dumped into one
// bucket three times at once; verify finds the bucket clean, ls shows
// all six checkpoints on either host, gc on a host refuses to run while
// the other has the bucket mounted, and each host restores the other's
// last checkpoint (which resumes intact).
func TestHostsConcurrentDumps(t *testing.T) {
	s := newHostsS3(t, "ckpt")
	a, b := newHost(t, s, "a"), newHost(t, s, "b")
	remote := "s3://ckpt/shared"
	hosts := []*host{a, b}
	progs := []*program{a.start(t, 32, 100), b.start(t, 32, 100)}
	ids := make([][]string, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 3; n++ {
				out, errOut, err := h.ckptfsErr(t, "dump", "-s", remote, itoa(progs[i].Pid))
				if err != nil {
					errs[i] = fmt.Errorf("on %s: dump %d: %v\n%s", h.name, n, err, errOut)
					return
				}
				ids[i] = append(ids[i], lastLine(out))
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	a.ckptfs(t, "verify", "-s", remote)
	for _, h := range hosts {
		ls := h.ckptfs(t, "ls", "-s", remote)
		for _, id := range append(append([]string{}, ids[0]...), ids[1]...) {
			if !strings.Contains(ls, id) {
				t.Fatalf("ls on %s lacks %s:\n%s", h.name, id, ls)
			}
		}
	}
	// Each host restores the other's program from its last checkpoint.
	subreaper(t)
	for i, p := range progs {
		p.kill()
		waitGone(t, p.Pid)
		other := hosts[1-i]
		mnt := other.mount(t, remote)
		if i == 0 {
			// The mount's lock on b keeps gc on a from running.
			_, errOut, err := a.ckptfsErr(t, "gc", "-s", remote)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 11 {
				t.Fatalf("gc on a while b has the bucket mounted: %v, want exit 11\n%s", err, errOut)
			}
			t.Logf("gc on a while b has it mounted: %s", strings.TrimSpace(errOut))
		}
		before := len(p.ticks())
		if pid := restoreOn(t, other, filepath.Join(mnt, ids[i][2]), false); pid != p.Pid {
			t.Fatalf("restore on %s: pid %d, want %d", other.name, pid, p.Pid)
		}
		p.resumes(t, before)
	}
}

var rewroteRe = regexp.MustCompile(`rewrote (\d+) pages ok`)

// rewrite makes hostmem p rewrite half its pages and returns how many.
func (p *program) rewrite(t testing.TB) int {
	t.Helper()
	before := len(rewroteRe.FindAllString(readFile(p.Out), -1))
	unix.Kill(p.Pid, unix.SIGUSR1)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := rewroteRe.FindAllStringSubmatch(readFile(p.Out), -1); len(m) > before {
			n, _ := strconv.Atoi(m[len(m)-1][1])
			p.waitTicks(t, 1)
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s did not rewrite its pages in 20s", p.Name)
	return 0
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// TestHostsCopy: host A dumps a program twice into its local store, half
// of its pages rewritten in between, and copies both checkpoints into the
// bucket: for the second the S3 server receives at most 1.05 times the
// bytes of the pages that changed (diff's count), everything sent
// included (requests, headers, page tables, manifest). Host B copies the
// second checkpoint from the bucket into its own local store, verifies
// it and restores from there: the program resumes intact.
func TestHostsCopy(t *testing.T) {
	s := newHostsS3(t, "ckpt")
	a, b := newHost(t, s, "a"), newHost(t, s, "b")
	remote := "s3://ckpt/copies"
	storeA, storeB := filepath.Join(a.home, "store"), filepath.Join(b.home, "store")
	p := a.start(t, 64, 100)
	id1 := lastLine(a.ckptfs(t, "dump", "-s", storeA, itoa(p.Pid)))
	rewritten := p.rewrite(t)
	id2 := lastLine(a.ckptfs(t, "dump", "-s", storeA, "--kill", itoa(p.Pid)))
	waitGone(t, p.Pid)
	var diff struct {
		PagesAdded   int `json:"pages_added"`
		PagesChanged int `json:"pages_changed"`
	}
	if out := a.ckptfs(t, "--json", "diff", "-s", storeA, id1, id2); json.Unmarshal([]byte(out), &diff) != nil {
		t.Fatalf("diff --json: %s", out)
	}
	changed := int64(diff.PagesAdded + diff.PagesChanged)
	if changed < int64(rewritten) {
		t.Fatalf("diff counts %d pages added or changed, the program rewrote %d", changed, rewritten)
	}
	a.ckptfs(t, "copy", "-s", storeA, "-d", remote, id1)
	before := s.received.Load()
	out := a.ckptfs(t, "copy", "-s", storeA, "-d", remote, id2)
	sent := s.received.Load() - before
	ratio := float64(sent) / float64(changed*4096)
	t.Logf("copy of the second checkpoint: %d bytes received by S3 for %d changed pages (%d rewritten by the program): %.4f of their bytes; copy said %s",
		sent, changed, rewritten, ratio, strings.TrimSpace(out))
	if ratio > 1.05 {
		t.Errorf("the second copy sent %d bytes for %d changed pages: %.3f times their bytes, want <= 1.05", sent, changed, ratio)
	}
	b.ckptfs(t, "copy", "-s", remote, "-d", storeB, id2)
	b.ckptfs(t, "verify", "-s", storeB)
	b.private(t, a)
	subreaper(t)
	mnt := b.mount(t, storeB)
	start := len(p.ticks())
	if pid := restoreOn(t, b, filepath.Join(mnt, id2), false); pid != p.Pid {
		t.Fatalf("restore on b: pid %d, want %d", pid, p.Pid)
	}
	p.resumes(t, start)
}

// TestHostsMigrate: ckptfs migrate PID --to the bucket on host A (pre-copy
// while the program runs, a short final freeze, the program killed)
// prints the commands that restore it; run on host B (with B's mount
// point), they bring it back intact.
func TestHostsMigrate(t *testing.T) {
	s := newHostsS3(t, "ckpt")
	a, b := newHost(t, s, "a"), newHost(t, s, "b")
	remote := "s3://ckpt/migrate"
	p := a.start(t, 64, 100)
	out, errOut, err := a.ckptfsErr(t, "migrate", "-v", itoa(p.Pid), "--to", remote)
	if err != nil {
		t.Fatalf("migrate: %v\n%s%s", err, out, errOut)
	}
	waitGone(t, p.Pid)
	id := lastLine(out)
	t.Logf("migrate said:\n%s", errOut)
	if !strings.Contains(errOut, "pre-copy pass 1: copied") {
		t.Fatalf("migrate made no pre-copy pass:\n%s", errOut)
	}
	var script []string
	for _, l := range strings.Split(errOut, "\n") {
		if l = strings.TrimSpace(l); strings.Contains(l, "ckptfs mount") || strings.HasPrefix(l, "ckptfs restore") {
			script = append(script, strings.TrimSpace(strings.Split(l, "#")[0]))
		}
	}
	if len(script) != 2 || !strings.Contains(script[1], "/run/ckptfs-mnt/"+id) {
		t.Fatalf("migrate printed no mount and restore commands for %s:\n%s", id, errOut)
	}
	// On B, with B's mount point and the ckptfs built here.
	mnt := filepath.Join(b.home, "mnt")
	sh := strings.ReplaceAll(strings.Join(script, " && "), "/run/ckptfs-mnt", mnt)
	sh = strings.ReplaceAll(sh, "ckptfs ", filepath.Join(built(t), "ckptfs")+" ")
	subreaper(t)
	before := len(p.ticks())
	cmd := b.command("sh", "-c", sh)
	res, err := cmd.CombinedOutput()
	var daemon int
	if i := strings.Index(string(res), "daemon pid "); i >= 0 {
		fmt.Sscanf(string(res[i:]), "daemon pid %d", &daemon)
	}
	t.Cleanup(func() {
		b.command("umount", mnt).Run()
		reapDaemon(t, daemon)
	})
	if err != nil {
		t.Fatalf("on b: %s: %v\n%s", sh, err, res)
	}
	pid, _ := strconv.Atoi(lastLine(string(res)))
	if pid != p.Pid {
		t.Fatalf("on b: %s printed %q, want pid %d", sh, res, p.Pid)
	}
	restored(t, pid)
	b.owns(t, pid)
	p.resumes(t, before)
}

// TestHostsMigrateToDirectory: migrate --to a store directory both hosts
// reach (the test's directory, standing for shared storage): B mounts
// the store and restores the program, which resumes intact.
func TestHostsMigrateToDirectory(t *testing.T) {
	s := newHostsS3(t, "ckpt")
	a, b := newHost(t, s, "a"), newHost(t, s, "b")
	shared := filepath.Join(t.TempDir(), "store")
	p := a.start(t, 32, 100)
	out, errOut, err := a.ckptfsErr(t, "migrate", itoa(p.Pid), "--to", shared)
	if err != nil {
		t.Fatalf("migrate: %v\n%s%s", err, out, errOut)
	}
	waitGone(t, p.Pid)
	id := lastLine(out)
	if !strings.Contains(errOut, "ckptfs mount --daemon -s "+shared+" ") || strings.Contains(errOut, "AWS_") {
		t.Fatalf("migrate --to %s printed:\n%s", shared, errOut)
	}
	subreaper(t)
	mnt := b.mount(t, shared)
	before := len(p.ticks())
	if pid := restoreOn(t, b, filepath.Join(mnt, id), false); pid != p.Pid {
		t.Fatalf("restore on b: pid %d, want %d", pid, p.Pid)
	}
	p.resumes(t, before)
}
