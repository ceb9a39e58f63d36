package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Lazy restore: the program runs before its memory is in; the page server
// fills it and exits, leaving nothing in the program.

// lazyRestore restores dir with --lazy, the page server logging to a file
// of the test, and returns the root pid and the log path.
func lazyRestore(t testing.TB, dir string, env ...string) (int, string) {
	t.Helper()
	pid, logPath, _ := lazyRestoreV(t, dir, env...)
	return pid, logPath
}

// lazyRestoreV is lazyRestore with -v; it also returns the phase lines.
func lazyRestoreV(t testing.TB, dir string, env ...string) (int, string, string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "lazy.log")
	cmd := exec.Command(filepath.Join(built(t), "ckptfs"), "restore", "-v", "--lazy", "--lazy-log", logPath, dir)
	cmd.Env = append(os.Environ(), env...)
	var phases strings.Builder
	cmd.Stderr = &phases
	out, err := cmd.Output()
	if err != nil {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("restore --lazy %s: %v\n%s\nserver log:\n%s", dir, err, phases.String(), b)
	}
	pid, err := strconv.Atoi(lastLine(string(out)))
	if err != nil {
		t.Fatalf("restore --lazy printed %q", out)
	}
	return pid, logPath, phases.String()
}

var serverPid = regexp.MustCompile(`pid (\d+) serving`)

// waitLazyServer waits until the page server of logPath has exited and
// returns its log.
func waitLazyServer(t testing.TB, logPath string) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		b, _ := os.ReadFile(logPath)
		log := string(b)
		if m := serverPid.FindStringSubmatch(log); m != nil && (strings.Contains(log, "all pages in, ") || strings.Contains(log, "done, with failures")) {
			pid, _ := strconv.Atoi(m[1])
			waitGone(t, pid)
			return log
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lazy page server did not finish in 2 minutes; log:\n%s", log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkNoTrace fails if a process of pids holds a userfaultfd, or has a
// mapping it did not have before the dump (maps0).
func checkNoTrace(t testing.TB, pid int, maps0 []string) {
	t.Helper()
	fds, _ := filepath.Glob("/proc/" + itoa(pid) + "/fd/*")
	for _, fd := range fds {
		if l, _ := os.Readlink(fd); strings.Contains(l, "userfaultfd") {
			t.Errorf("pid %d: fd %s is %s after the page server exited", pid, filepath.Base(fd), l)
		}
	}
	if maps0 == nil {
		return
	}
	now := mapRanges(t, pid)
	if strings.Join(now, "\n") != strings.Join(maps0, "\n") {
		t.Errorf("pid %d: maps after lazy restore\n%s\nwant as dumped\n%s", pid, strings.Join(now, "\n"), strings.Join(maps0, "\n"))
	}
}

// mapRanges lists the address ranges, permissions and names of pid's maps.
func mapRanges(t testing.TB, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		name := ""
		if len(f) >= 6 {
			name = f[5]
		}
		if name == "[stack]" { // grows as it runs
			continue
		}
		out = append(out, f[0]+" "+f[1]+" "+name)
	}
	return out
}

// dumpLazyCase dumps p (killing it) into a mounted store and returns the
// checkpoint dir on the mount and the maps p had.
func dumpLazyCase(t testing.TB, p *program) (*mountedStore, string, []string) {
	t.Helper()
	maps0 := mapRanges(t, p.Pid)
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	id := lastLine(ckptfs(t, "dump", "-s", m.store, "--kill", itoa(p.Pid)))
	waitGone(t, p.Pid)
	dir := filepath.Join(m.mnt, id)
	// Every task of the checkpoint (a child forked then) must be gone
	// before it can be restored with its pid.
	ents, err := os.ReadDir(filepath.Join(dir, "tasks"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			waitGone(t, pid)
			t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) }) // once restored
		}
	}
	return m, dir, maps0
}

func TestLazyRestore(t *testing.T) {
	mib := 1024
	if testing.Short() {
		mib = 256
	}
	for _, c := range []struct {
		kind string
		mib  int
	}{{"static", mib}, {"pthreads", 64}} {
		t.Run(c.kind, func(t *testing.T) {
			p := startProgram(t, c.kind, c.mib)
			ticks := len(p.ticks())
			_, dir, maps0 := dumpLazyCase(t, p)
			pid, logPath := lazyRestore(t, dir)
			p.Pid = pid
			t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL); waitGone(t, pid) })
			log := waitLazyServer(t, logPath)
			if strings.Contains(log, "failures") {
				t.Fatalf("page server failed:\n%s", log)
			}
			for len(p.ticks()) < ticks+2 {
				p.waitTicks(t, 1)
			}
			p.checkHealthy(t)
			checkNoTrace(t, pid, maps0)
		})
	}
}

// TestLazyRestoreForkingServer restores a program that forks, mremaps and
// drops memory (MADV_DONTNEED) every tick, in parent and child, while
// its pages are still coming in.
func TestLazyRestoreForkingServer(t *testing.T) {
	prog := buildProg(t, "lazyfork")
	p := startArgv(t, "lazyfork", []string{prog, "64", "20"})
	p.waitTicks(t, 2)
	_, dir, _ := dumpLazyCase(t, p)
	// The root's background pass waits 3 s: it forks, moves and drops
	// memory meanwhile with most of its pages missing. (The root, by its
	// pid: with several tracers the tree's tasks reach the page server in
	// no fixed order.)
	root := p.Pid
	pid, logPath := lazyRestore(t, dir, "CKPTFS_TEST_HOLD=lazy-fill-task-"+itoa(root), "CKPTFS_TEST_HOLD_MS=3000")
	p.Pid = pid
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL); waitGone(t, pid) })
	log := waitLazyServer(t, logPath)
	if strings.Contains(log, "failures") {
		t.Fatalf("page server failed:\n%s", log)
	}
	t.Logf("page server log:\n%s", log)
	if !strings.Contains(log, "child of task") {
		t.Errorf("no fork while pages were missing; log:\n%s", log)
	}
	p.waitTicks(t, 3)
	p.checkHealthy(t)
	checkNoTrace(t, pid, nil)
}

// TestLazyRestoreStoreGone kills the mount daemon while the page server
// still has pages to serve: the program must die of SIGBUS, never run on
// with pages it did not get, and the log must say why.
func TestLazyRestoreStoreGone(t *testing.T) {
	// Ticks every 10 s: after the restore it sleeps on before touching
	// its memory, and the server's background pass is held 2 s.
	p := startArgv(t, "counter", []string{filepath.Join(built(t), "counter-static"), "64", "10000", "0"})
	m, dir, _ := dumpLazyCase(t, p)
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	pid, logPath := lazyRestore(t, dir, "CKPTFS_TEST_HOLD=lazy-fill", "CKPTFS_TEST_HOLD_MS=2000")
	if err := unix.Kill(m.daemon, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(m.mnt, unix.MNT_DETACH); m.done = true; os.Remove(m.mnt) })
	ws := waitDeath(t, pid, logPath)
	if !ws.Signaled() || ws.Signal() != unix.SIGBUS {
		t.Errorf("restored program ended with %v, want SIGBUS", ws)
	}
	log := waitLazyServer(t, logPath)
	t.Logf("page server log:\n%s", log)
	if !strings.Contains(log, "failures") || !strings.Contains(log, "SIGBUS") {
		t.Errorf("page server log does not say it failed:\n%s", log)
	}
	p.Cmd = nil
	if lines := p.ticks(); len(lines) > 1 {
		t.Errorf("the program ticked after losing its pages: %q", lines)
	}
}

// TestLazyRestoreBadPage restores a copy of a checkpoint with one byte of
// a page changed: eager restore refuses it; lazily, the page is never
// given, the program dies of SIGBUS when it touches it, and the log names
// the page.
func TestLazyRestoreBadPage(t *testing.T) {
	p := startProgram(t, "static", 64)
	_, dir, _ := dumpLazyCase(t, p)
	cp := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", dir, cp).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	// The largest vma: the program's checked region.
	pagesFiles, _ := filepath.Glob(filepath.Join(cp, "tasks", "*", "vmas", "*", "pages"))
	var big string
	var bigSize int64
	for _, f := range pagesFiles {
		if st, err := os.Stat(f); err == nil && st.Size() > bigSize {
			big, bigSize = f, st.Size()
		}
	}
	pm, err := os.ReadFile(filepath.Join(filepath.Dir(big), "pagemap"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(pm)), "\n")
	addr, err := strconv.ParseUint(strings.Fields(lines[len(lines)/3])[0], 0, 64)
	if err != nil {
		t.Fatal(err)
	}
	start, err := strconv.ParseUint(strings.SplitN(filepath.Base(filepath.Dir(big)), "-", 2)[0], 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(big, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, int64(addr-start)+100)
	b[0] ^= 0xff
	f.WriteAt(b, int64(addr-start)+100)
	f.Close()
	if _, _, err := ckptfsErr(t, "restore", cp); err == nil {
		t.Fatal("eager restore accepted the changed page")
	}

	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	pid, logPath := lazyRestore(t, cp)
	ws := waitDeath(t, pid, logPath)
	if !ws.Signaled() || ws.Signal() != unix.SIGBUS {
		t.Errorf("restored program ended with %v, want SIGBUS", ws)
	}
	log := waitLazyServer(t, logPath)
	t.Logf("page server log:\n%s", log)
	if want := fmt.Sprintf("page %#x: page does not match its pagemap", addr); !strings.Contains(log, want) {
		t.Errorf("page server log does not say %q", want)
	}
	p.Cmd = nil
}

// waitDeath reaps pid (a child of this subreaper) and returns its status.
func waitDeath(t *testing.T, pid int, logPath string) unix.WaitStatus {
	t.Helper()
	var ws unix.WaitStatus
	deadline := time.Now().Add(time.Minute)
	for {
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if got == pid {
			return ws
		}
		if err != nil || time.Now().After(deadline) {
			unix.Kill(pid, unix.SIGKILL)
			b, _ := os.ReadFile(logPath)
			t.Fatalf("restored pid %d did not end (%v); log:\n%s", pid, err, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
