package tests

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/wptrack"
)

// requireAsyncWP skips where the kernel has no async write-protect
// userfaultfd (before 6.7) or refuses userfaultfd(2).
func requireAsyncWP(t testing.TB) {
	t.Helper()
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, wptrack.OpenFlags, 0, 0)
	if e != 0 {
		t.Skipf("userfaultfd: %v", e)
	}
	defer unix.Close(int(fd))
	if err := wptrack.EnableAsyncWP(int(fd)); err != nil {
		t.Skipf("no async write-protect in this kernel: %v", err)
	}
}

// trackerPids returns the pids of the trackers serving store.
func trackerPids(store string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if bytes.Contains(b, []byte("track-holder")) && bytes.Contains(b, []byte(store+"/track/")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func killTrackers(t testing.TB, store string) {
	for _, pid := range trackerPids(store) {
		unix.Kill(pid, unix.SIGKILL)
		waitGone(t, pid)
	}
}

// visible is what the program could see of a dump: its fds (and what they
// are), the names and permissions of its file mappings, pending signals.
func visible(t testing.TB, pid int) (fds []string, named []string, pending string) {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		l, _ := os.Readlink("/proc/" + itoa(pid) + "/fd/" + e.Name())
		fds = append(fds, e.Name()+" "+l)
	}
	maps, _ := os.ReadFile("/proc/" + itoa(pid) + "/maps")
	for _, line := range strings.Split(string(maps), "\n") {
		if f := strings.Fields(line); len(f) >= 6 {
			named = append(named, f[1]+" "+f[5])
		}
	}
	slices.Sort(named)
	named = slices.Compact(named)
	status, _ := os.ReadFile("/proc/" + itoa(pid) + "/status")
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "SigPnd:") || strings.HasPrefix(line, "ShdPnd:") {
			pending += line + "\n"
		}
	}
	return fds, named, pending
}

type trackedCkpt struct {
	id     string
	lo, hi int
	said   string // the dump's stderr
}

// dumpTracked runs dump --track (plus extra flags) and checks that its
// stderr says want.
func dumpTracked(t *testing.T, p *program, store, want string, extra ...string) trackedCkpt {
	t.Helper()
	args := append([]string{"dump", "--track", "-s", store}, extra...)
	args = append(args, itoa(p.Pid))
	lo := lastTick(p) + 1
	out, errOut, err := ckptfsErr(t, args...)
	if err != nil {
		t.Fatalf("ckptfs %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	if !strings.Contains(errOut, want) {
		t.Fatalf("dump --track said:\n%s\nwant %q in it", errOut, want)
	}
	t.Logf("%s", strings.TrimSpace(errOut))
	return trackedCkpt{lastLine(out), lo, lastTick(p) + 1, errOut}
}

// TestTrackedDumps: tracked dumps of a program that rewrites, drops, maps
// afresh and moves memory between dumps; tracking lost (tracker killed,
// previous checkpoint removed) is said and read in full; the program sees
// nothing; every checkpoint restores to its own moment with its memory
// as it was (the program checks all of it at every tick).
func TestTrackedDumps(t *testing.T) {
	requireAsyncWP(t)
	bin := buildProg(t, "trackmem")
	p := startArgv(t, "trackmem", []string{bin, "16", "100"})
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	t.Cleanup(func() { unix.Kill(p.Pid, unix.SIGKILL); waitGone(t, p.Pid); killTrackers(t, m.store) })

	fds0, named0, pend0 := visible(t, p.Pid)
	var ckpts []trackedCkpt
	ckpts = append(ckpts, dumpTracked(t, p, m.store, "read everything"))
	fds1, named1, pend1 := visible(t, p.Pid)
	if !slices.Equal(fds0, fds1) || !slices.Equal(named0, named1) || pend0 != pend1 {
		t.Fatalf("the program sees the tracking:\nfds %v -> %v\nmappings %v -> %v\npending %q -> %q", fds0, fds1, named0, named1, pend0, pend1)
	}
	if n := len(trackerPids(m.store)); n != 1 {
		t.Fatalf("%d trackers after a tracked dump, want 1", n)
	}
	p.waitTicks(t, 6)
	ckpts = append(ckpts, dumpTracked(t, p, m.store, "unwritten pages taken from "+ckpts[0].id))
	p.waitTicks(t, 6)
	ckpts = append(ckpts, dumpTracked(t, p, m.store, "unwritten pages taken from "+ckpts[1].id))
	if n := len(trackerPids(m.store)); n != 1 {
		t.Fatalf("%d trackers after three tracked dumps, want 1", n)
	}

	// Tracking lost: the tracker dies; the next dump reads everything.
	killTrackers(t, m.store)
	p.waitTicks(t, 3)
	ckpts = append(ckpts, dumpTracked(t, p, m.store, "no tracker holds"))
	p.waitTicks(t, 3)
	ckpts = append(ckpts, dumpTracked(t, p, m.store, "unwritten pages taken from "+ckpts[3].id))
	// The checkpoint it followed is removed: read in full.
	ckptfs(t, "rm", "-s", m.store, ckpts[4].id)
	p.waitTicks(t, 3)
	ckpts = append(ckpts, dumpTracked(t, p, m.store, "cannot be loaded"))
	ckpts = slices.Delete(ckpts, 4, 5)
	p.waitTicks(t, 6)
	// Pre-copy migration: passes while it runs, then a frozen rest.
	ckpts = append(ckpts, dumpTracked(t, p, m.store, "unwritten pages taken from", "--pre-copy", "--kill"))
	waitGone(t, p.Pid)
	ckptfs(t, "verify", "-s", m.store)

	restoreEachTracked(t, p, m.mnt, ckpts)
}

// restoreEachTracked restores each checkpoint in turn from the mount mnt:
// the program resumes within the ticks the dump saw, runs three more and
// is healthy, then is killed for the next.
func restoreEachTracked(t *testing.T, p *program, mnt string, ckpts []trackedCkpt) {
	t.Helper()
	for _, c := range ckpts {
		first := firstTickAfter(t, p, filepath.Join(mnt, c.id))
		if first < c.lo || first > c.hi {
			t.Errorf("checkpoint %s resumed at tick %d, want %d..%d", c.id, first, c.lo, c.hi)
		}
		p.waitTicks(t, 3)
		p.checkHealthy(t)
		unix.Kill(p.Pid, unix.SIGKILL)
		waitGone(t, p.Pid)
	}
}

// TestDumpEvery: dump --every makes a tracked checkpoint each period,
// keeps the last --keep-last of them (the others removed and gc'd), and
// stops cleanly when the tree exits, or on SIGINT.
func TestDumpEvery(t *testing.T) {
	requireAsyncWP(t)
	bin := buildProg(t, "trackmem")
	store := filepath.Join(t.TempDir(), "store")
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	t.Cleanup(func() { killTrackers(t, store) })

	// Until the tree exits (after 40 ticks of 100 ms).
	p := startArgv(t, "trackmem", []string{bin, "8", "100", "40"})
	out, errOut, err := ckptfsErr(t, "dump", "--every", "500ms", "--keep-last", "2", "-s", store, itoa(p.Pid))
	if err != nil {
		t.Fatalf("dump --every: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "the tree exited after 2 checkpoint(s)") {
		t.Fatalf("dump --every said:\n%s", errOut)
	}
	ids := strings.Fields(out)
	if len(ids) < 4 {
		t.Fatalf("dump --every made %d checkpoints in 4 s at 500 ms: %v\n%s", len(ids), ids, errOut)
	}
	if n := strings.Count(errOut, "unwritten pages taken from"); n != len(ids)-1 {
		t.Errorf("%d of %d dumps after the first were tracked:\n%s", n, len(ids)-1, errOut)
	}
	ls := ckptfs(t, "ls", "-s", store)
	for i, id := range ids {
		if kept := strings.Contains(ls, id); kept != (i >= len(ids)-2) {
			t.Errorf("checkpoint %d of %d (%s) kept: %v\n%s", i+1, len(ids), id, kept, ls)
		}
	}
	ckptfs(t, "verify", "-s", store)
	p.kill()

	// Until SIGINT: no half checkpoint, every one printed is there.
	p = startArgv(t, "trackmem", []string{bin, "8", "100"})
	t.Cleanup(func() { unix.Kill(p.Pid, unix.SIGKILL); waitGone(t, p.Pid) })
	cmd := exec.Command(filepath.Join(built(t), "ckptfs"), "dump", "--every", "300ms", "-s", store, itoa(p.Pid))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); len(strings.Fields(stdout.String())) < 3; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("dump --every made no 3 checkpoints in 30 s:\n%s", stderr.String())
		}
	}
	cmd.Process.Signal(unix.SIGINT)
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 130) {
		t.Fatalf("dump --every after SIGINT: %v\n%s", err, stderr.String())
	}
	ls = ckptfs(t, "ls", "-s", store)
	for _, id := range strings.Fields(stdout.String()) {
		if !strings.Contains(ls, id) {
			t.Errorf("checkpoint %s printed but not in the store:\n%s", id, ls)
		}
	}
	ckptfs(t, "verify", "-s", store)
	if ok, state := running(p.Pid); !ok {
		t.Fatalf("program in state %s after dump --every was stopped", state)
	}
	p.waitTicks(t, 2)
	p.checkHealthy(t)
}

// TestTrackedTree: tracked dumps of a tree of processes and of a threaded
// program: every process is tracked, the second dump reads none in full,
// and it restores.
func TestTrackedTree(t *testing.T) {
	requireAsyncWP(t)
	for _, kind := range []string{"forktree", "pthreads"} {
		t.Run(kind, func(t *testing.T) {
			var p *program
			if kind == "forktree" {
				p = startArgv(t, "forktree", []string{buildProg(t, "forktree"), "4"})
			} else {
				p = startProgram(t, kind, 16)
			}
			m := mountStore(t, filepath.Join(t.TempDir(), "store"))
			unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
			defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
			t.Cleanup(func() { unix.Kill(p.Pid, unix.SIGKILL); waitGone(t, p.Pid); killTrackers(t, m.store) })
			procs := 1
			if kind == "forktree" {
				procs = 5
			}
			dumpTracked(t, p, m.store, itoa(procs)+" process(es) write-protected")
			p.waitTicks(t, 3)
			kids, _ := proc.Children(p.Pid)
			c := dumpTracked(t, p, m.store, "unwritten pages taken from", "--kill")
			for _, k := range kids {
				waitGone(t, k) // reaped here: we are their subreaper now
			}
			if strings.Contains(c.said, "read in full: ") && !strings.Contains(c.said, "read in full: 0 process(es)") {
				t.Fatalf("a process of the tree was not tracked:\n%s", c.said)
			}
			waitGone(t, p.Pid)
			first := firstTickAfter(t, p, filepath.Join(m.mnt, c.id))
			if first < c.lo || first > c.hi {
				t.Errorf("checkpoint %s resumed at tick %d, want %d..%d", c.id, first, c.lo, c.hi)
			}
			p.waitTicks(t, 3)
			p.checkHealthy(t)
		})
	}
}

// TestTrackedNewProcess: a process that joined the tree since the last
// tracked dump is read in full, and said so; the others stay tracked.
func TestTrackedNewProcess(t *testing.T) {
	requireAsyncWP(t)
	store := filepath.Join(t.TempDir(), "store")
	cmd := exec.Command("sh", "-c", "while :; do sleep 0.2; done")
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(-cmd.Process.Pid, unix.SIGKILL); cmd.Wait(); killTrackers(t, store) })
	p := &program{Name: "sh", Pid: cmd.Process.Pid}
	time.Sleep(100 * time.Millisecond)
	dumpTracked(t, p, store, "write-protected for the next dump")
	time.Sleep(500 * time.Millisecond) // a new sleep child since
	c := dumpTracked(t, p, store, "is new to the tree or was not tracked: read in full")
	if !strings.Contains(c.said, "unwritten pages taken from") {
		t.Fatalf("the shell itself was not tracked:\n%s", c.said)
	}
	ckptfs(t, "verify", "-s", store)
}

// TestTrackedDumpAborted: a tracked dump stopped after its re-arm (SIGINT
// at the commit) has cleared the written state it did not keep: tracking
// is dropped, the next dump reads everything and says so, and its
// checkpoint restores right.
func TestTrackedDumpAborted(t *testing.T) {
	requireAsyncWP(t)
	bin := buildProg(t, "trackmem")
	p := startArgv(t, "trackmem", []string{bin, "8", "100"})
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	t.Cleanup(func() { unix.Kill(p.Pid, unix.SIGKILL); waitGone(t, p.Pid); killTrackers(t, m.store) })

	dumpTracked(t, p, m.store, "write-protected for the next dump")
	p.waitTicks(t, 4)
	cmd := exec.Command(filepath.Join(built(t), "ckptfs"), "dump", "--track", "-s", m.store, itoa(p.Pid))
	cmd.Env = append(os.Environ(), "CKPTFS_TEST_HOLD=commit")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !strings.Contains(sc.Text(), "CKPTFS_HOLD commit") {
	}
	cmd.Process.Signal(unix.SIGINT)
	io.Copy(io.Discard, stderr)
	if err := cmd.Wait(); err == nil {
		t.Fatal("the held dump was not aborted by SIGINT")
	}
	p.waitTicks(t, 4)
	c := dumpTracked(t, p, m.store, "no tracker holds")
	p.waitTicks(t, 4)
	c2 := dumpTracked(t, p, m.store, "unwritten pages taken from "+c.id, "--kill")
	waitGone(t, p.Pid)
	restoreEachTracked(t, p, m.mnt, []trackedCkpt{c, c2})
}

// TestTrackFlagsRefused: bad --every/--keep-last/--pre-copy combinations
// are refused before anything is started.
func TestTrackFlagsRefused(t *testing.T) {
	store := filepath.Join(t.TempDir(), "store")
	pid := itoa(os.Getpid())
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--keep-last", "2"}, "--keep-last needs --every"},
		{[]string{"--every", "10ms"}, "at least 100ms"},
		{[]string{"--every", "1s", "--kill"}, "cannot be used with --kill"},
		{[]string{"--every", "1s", "--keep-last", "-1"}, "must be at least 0"},
		{[]string{"--every", "1s", "--name", "x"}, "cannot be used with --name"},
	} {
		args := append(append([]string{"dump", "-s", store}, c.args...), pid)
		_, errOut, err := ckptfsErr(t, args...)
		if err == nil || !strings.Contains(errOut, c.want) {
			t.Errorf("ckptfs %s: %v, said %q, want %q", strings.Join(args, " "), err, errOut, c.want)
		}
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Errorf("a refused dump left %s", store)
	}
}
