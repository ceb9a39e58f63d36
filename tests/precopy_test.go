package tests

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/proc"
)

// The default dump of a large tree pre-copies it: one tracked pass while
// it runs, a short final freeze for what it wrote meanwhile, and the
// tracking closed after (dumper/trackonce.go, cmd/ckptfs/track.go).

// uwVMAs lists the vmas of pid registered with a userfaultfd (VmFlags
// "uw"): after a dump that is not --track, none may be left.
func uwVMAs(t testing.TB, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			cur = line
		}
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok {
			for _, fl := range strings.Fields(rest) {
				if fl == "uw" {
					out = append(out, cur)
				}
			}
		}
	}
	return out
}

// checkUntouched checks that the program runs on as if no dump had been:
// not stopped or traced, no vma left write-tracked, no fd of ours, and
// it checks its own memory right for three more ticks.
func checkUntouched(t *testing.T, p *program, fds0 []string) {
	t.Helper()
	if ok, state := running(p.Pid); !ok {
		t.Fatalf("program in state %s after the dump", state)
	}
	status, _ := proc.Read(p.Pid, "status")
	if tp := proc.KeyValues(status)["TracerPid"]; tp != "0" {
		t.Fatalf("program still traced by %s", tp)
	}
	if uw := uwVMAs(t, p.Pid); len(uw) > 0 {
		t.Fatalf("vmas still registered with a userfaultfd after the dump:\n%s", strings.Join(uw, "\n"))
	}
	if fds0 != nil {
		fds, _, _ := visible(t, p.Pid)
		if strings.Join(fds, "\n") != strings.Join(fds0, "\n") {
			t.Fatalf("the program's fds changed: %v -> %v", fds0, fds)
		}
	}
	p.waitTicks(t, 3)
	p.checkHealthy(t)
}

// TestDefaultPreCopy: a 128 MiB program that rewrites, drops, maps afresh
// and moves memory every 10 ms is dumped by the default path (pre-copy
// pass, final freeze), left running with no tracking left, then dumped
// again with --kill the same way; each checkpoint restores to its own
// moment with all its memory right (the program checks every page at
// every tick against what the tick says it must hold).
func TestDefaultPreCopy(t *testing.T) {
	requireAsyncWP(t)
	bin := buildProg(t, "trackmem")
	p := startArgv(t, "trackmem", []string{bin, "128", "10"})
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	t.Cleanup(func() { unix.Kill(p.Pid, unix.SIGKILL); waitGone(t, p.Pid) })
	p.waitTicks(t, 2)
	fds0, _, _ := visible(t, p.Pid)

	dump := func(extra ...string) trackedCkpt {
		t.Helper()
		args := append(append([]string{"dump", "-v", "-s", m.store}, extra...), itoa(p.Pid))
		lo := lastTick(p) + 1
		out, errOut, err := ckptfsErr(t, args...)
		if err != nil {
			t.Fatalf("ckptfs %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		for _, want := range []string{"pages copied while the tree ran", "pre-copy: final freeze:", "dump: memory copied", "pages pre-copied while it ran"} {
			if !strings.Contains(errOut, want) {
				t.Fatalf("dump said:\n%s\nwant %q in it", errOut, want)
			}
		}
		if strings.Contains(errOut, "write-protected for the next dump") {
			t.Fatalf("a default dump left tracking:\n%s", errOut)
		}
		t.Logf("%s", strings.TrimSpace(errOut))
		return trackedCkpt{lastLine(out), lo, lastTick(p) + 1, errOut}
	}
	c1 := dump()
	if n := len(trackerPids(m.store)); n != 0 {
		t.Fatalf("%d track-holder(s) after a default dump", n)
	}
	checkUntouched(t, p, fds0)
	c2 := dump("--kill")
	waitGone(t, p.Pid)
	ckptfs(t, "verify", "-s", m.store)
	restoreEachTracked(t, p, m.mnt, []trackedCkpt{c1, c2})
}

// TestPreCopyDumperKilled: the dump's tracer, killed with SIGKILL while
// the pre-copy pass copies (the tree running, write-protected), leaves
// the program running, unharmed, with no vma left write-tracked: the
// protection was held only by the tracer's userfaultfds. The next dump
// works and restores.
func TestPreCopyDumperKilled(t *testing.T) {
	requireAsyncWP(t)
	bin := buildProg(t, "trackmem")
	p := startArgv(t, "trackmem", []string{bin, "128", "10"})
	store := filepath.Join(t.TempDir(), "store")
	t.Cleanup(func() { unix.Kill(p.Pid, unix.SIGKILL); waitGone(t, p.Pid) })
	p.waitTicks(t, 2)
	fds0, _, _ := visible(t, p.Pid)

	cmd := exec.Command(filepath.Join(built(t), "ckptfs"), "dump", "-v", "-s", store, itoa(p.Pid))
	cmd.Env = append(os.Environ(), "CKPTFS_TEST_HOLD=copy", "CKPTFS_TEST_HOLD_MS=20000")
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var said strings.Builder
	sc := bufio.NewScanner(stderr)
	held := false
	for sc.Scan() {
		said.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "CKPTFS_HOLD copy") {
			held = true
			break
		}
	}
	if !held || !strings.Contains(said.String(), "pre-copy: tree released") {
		t.Fatalf("the dump did not reach the pre-copy pass's copy:\n%s", said.String())
	}
	// The tracer (the front's child, in a session of its own) holds the
	// userfaultfds; the tree runs, write-protected.
	kids, _ := proc.Children(cmd.Process.Pid)
	if len(kids) != 1 {
		t.Fatalf("dump front has children %v, want its tracer", kids)
	}
	tracer := kids[0]
	if len(uwVMAs(t, p.Pid)) == 0 {
		t.Fatal("no vma write-tracked during the pre-copy pass")
	}
	if ok, state := running(p.Pid); !ok {
		t.Fatalf("program in state %s during the pre-copy pass", state)
	}
	unix.Kill(tracer, unix.SIGKILL)
	go io.Copy(io.Discard, stderr)
	if err := cmd.Wait(); err == nil {
		t.Fatal("dump succeeded with its tracer killed")
	}
	waitGone(t, tracer)
	// The kernel drops the registration when the last fd closes: at once.
	for deadline := time.Now().Add(5 * time.Second); len(uwVMAs(t, p.Pid)) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	checkUntouched(t, p, fds0)

	m := mountStore(t, store)
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	lo := lastTick(p) + 1
	id := lastLine(ckptfs(t, "dump", "-s", store, "--kill", itoa(p.Pid)))
	c := trackedCkpt{id, lo, lastTick(p) + 1, ""}
	waitGone(t, p.Pid)
	restoreEachTracked(t, p, m.mnt, []trackedCkpt{c})
}

// TestNoPreCopy: --no-pre-copy copies everything frozen, as dumps did
// before pre-copy was the default, and restores; a small tree is copied
// frozen by default; a tree a track-holder tracks (dump --track) is not
// pre-copied (its written state is the tracker's), is copied frozen, and
// stays tracked: the next --track dump still takes the unwritten pages
// from the tracked checkpoint, and both restore right.
func TestNoPreCopy(t *testing.T) {
	requireAsyncWP(t)
	bin := buildProg(t, "trackmem")
	p := startArgv(t, "trackmem", []string{bin, "128", "10"})
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	t.Cleanup(func() { unix.Kill(p.Pid, unix.SIGKILL); waitGone(t, p.Pid); killTrackers(t, m.store) })
	p.waitTicks(t, 2)

	lo := lastTick(p) + 1
	out, errOut, err := ckptfsErr(t, "dump", "-v", "--no-pre-copy", "-s", m.store, itoa(p.Pid))
	if err != nil {
		t.Fatalf("dump --no-pre-copy: %v\n%s", err, errOut)
	}
	if strings.Contains(errOut, "pre-copy") || !strings.Contains(errOut, "dump: buffers prefaulted") {
		t.Fatalf("dump --no-pre-copy said:\n%s", errOut)
	}
	c1 := trackedCkpt{lastLine(out), lo, lastTick(p) + 1, errOut}
	checkUntouched(t, p, nil)

	// Tracked by a track-holder: the default dump leaves its tracking be.
	c2 := dumpTracked(t, p, m.store, "write-protected for the next dump")
	p.waitTicks(t, 3)
	lo = lastTick(p) + 1
	out, errOut, err = ckptfsErr(t, "dump", "-v", "-s", m.store, itoa(p.Pid))
	if err != nil {
		t.Fatalf("dump of a tracked tree: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "registered with another userfaultfd") || !strings.Contains(errOut, "dump: buffers prefaulted") {
		t.Fatalf("dump of a tracked tree said:\n%s", errOut)
	}
	c3 := trackedCkpt{lastLine(out), lo, lastTick(p) + 1, errOut}
	if n := len(trackerPids(m.store)); n != 1 {
		t.Fatalf("%d trackers after a default dump of a tracked tree, want 1", n)
	}
	p.waitTicks(t, 3)
	c4 := dumpTracked(t, p, m.store, "unwritten pages taken from "+c2.id, "--kill")
	waitGone(t, p.Pid)
	ckptfs(t, "verify", "-s", m.store)
	restoreEachTracked(t, p, m.mnt, []trackedCkpt{c1, c2, c3, c4})

	// A small tree: below the threshold, copied frozen.
	small := startArgv(t, "trackmem", []string{bin, "8", "100"})
	t.Cleanup(func() { unix.Kill(small.Pid, unix.SIGKILL); waitGone(t, small.Pid) })
	small.waitTicks(t, 1)
	_, errOut, err = ckptfsErr(t, "dump", "-v", "-s", m.store, itoa(small.Pid))
	if err != nil || !strings.Contains(errOut, "pre-copy: none: ") || !strings.Contains(errOut, "dump: buffers prefaulted") {
		t.Fatalf("dump of a small tree: %v\n%s", err, errOut)
	}
	checkUntouched(t, small, nil)
}
