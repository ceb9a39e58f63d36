package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// procState returns the state letter of /proc/<pid>/stat ("" if gone).
func procState(pid int) string {
	st, err := stat(pid)
	if err != nil {
		return ""
	}
	return st.State
}

// waitState waits until pid is in state want.
func waitState(t *testing.T, pid int, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if procState(pid) == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d is in state %q, want %q", pid, procState(pid), want)
}

// TestRestoreZombieAndStopped restores a parent with two unreaped zombie
// children, one that exited with status 7 and one killed by SIGTERM, and a
// child that stopped itself with SIGSTOP. After the restore the zombies are
// zombies again, the stopped child is stopped, and the parent reaps the
// zombies with their wait statuses.
func TestRestoreZombieAndStopped(t *testing.T) {
	p := startProgram(t, "zombie", 0)
	p.waitTicks(t, 2)
	pids := treePids(p.Pid)
	if len(pids) != 4 {
		t.Fatalf("tree %v, want parent and three children", pids)
	}
	zombie, stopped, killed := pids[1], pids[2], pids[3]
	waitState(t, zombie, "Z")
	waitState(t, stopped, "T")
	waitState(t, killed, "Z")
	ticks := p.waitTicks(t, 1)
	before := tickField(ticks[len(ticks)-1], "sigchld")
	groups := pgids(t, pids)

	killRestoreFromMount(t, p.Pid)
	if got := treePids(p.Pid); fmt.Sprint(got) != fmt.Sprint(pids) {
		t.Fatalf("restored tree %v, want %v", got, pids)
	}
	if got := pgids(t, pids); got != groups {
		t.Fatalf("restored process groups %s, want %s", got, groups)
	}
	for _, z := range []int{zombie, killed} {
		if s := procState(z); s != "Z" {
			t.Fatalf("restored zombie %d is in state %q", z, s)
		}
	}
	waitState(t, stopped, "T")
	ticks = p.waitTicks(t, 2)
	// Recreating the zombies must not hand the parent SIGCHLDs it already had.
	if after := tickField(ticks[len(ticks)-1], "sigchld"); after != before {
		t.Fatalf("parent counted %s SIGCHLDs before the dump, %s after the restore", before, after)
	}

	// The parent reaps the zombie and checks its exit status.
	if err := unix.Kill(p.Pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	p.waitTicks(t, 2)
	b, _ := os.ReadFile(p.Out)
	for _, want := range []string{fmt.Sprintf("reaped %d status 0x700 ok", zombie), fmt.Sprintf("reaped %d status 0xf ok", killed)} {
		if !strings.Contains(string(b), want) {
			t.Fatalf("parent did not print %q; output:\n%s", want, b)
		}
	}
	p.checkHealthy(t)
	waitGone(t, zombie)
	waitGone(t, killed)
	if s := procState(stopped); s != "T" {
		t.Fatalf("stopped child %d is in state %q after the reap", stopped, s)
	}
}

// TestRestoreSharedFdTable: a parent and a child sharing one fd table
// (clone(CLONE_FILES) without CLONE_THREAD) are dumped with the table once
// and restored sharing it again: every tick the parent dup()s an fd, the
// child sees it open and closes it, and the parent sees it closed.
func TestRestoreSharedFdTable(t *testing.T) {
	p := startProgram(t, "zombie-files", 0)
	pids := treePids(p.Pid)
	if len(pids) != 2 {
		t.Fatalf("tree %v, want parent and child", pids)
	}
	t.Cleanup(func() { unix.Kill(pids[1], unix.SIGKILL) })
	p.waitTicks(t, 2)
	killRestoreFromMount(t, p.Pid)
	if got := treePids(p.Pid); fmt.Sprint(got) != fmt.Sprint(pids) {
		t.Fatalf("restored tree %v, want %v", got, pids)
	}
	if same, err := ptrace.SameFiles(pids[0], pids[1]); err != nil || !same {
		t.Fatalf("restored processes %v share their fd table: %v (%v)", pids, same, err)
	}
	p.waitTicks(t, 3)
	p.checkHealthy(t)
}

// TestDumpRefusesUnrestorableSharedFdTable: two siblings sharing an fd
// table their parent no longer shares cannot be recreated by cloning from
// the parent: the dump refuses before anything is seized, naming both
// pids; the program runs on untraced.
func TestDumpRefusesUnrestorableSharedFdTable(t *testing.T) {
	p := startProgram(t, "zombie-files-siblings", 0)
	pids := treePids(p.Pid)
	if len(pids) != 3 {
		t.Fatalf("tree %v, want parent and two children", pids)
	}
	t.Cleanup(func() { unix.Kill(pids[1], unix.SIGKILL); unix.Kill(pids[2], unix.SIGKILL) })
	store := filepath.Join(t.TempDir(), "store")
	_, stderr, err := ckptfsErr(t, "dump", "-s", store, itoa(p.Pid))
	if err == nil {
		t.Fatal("dump of siblings sharing an fd table succeeded")
	}
	want := fmt.Sprintf("process %d shares its fd table with process %d, whose parent %d does not", pids[1], pids[2], pids[0])
	if !strings.Contains(stderr, want) || !strings.Contains(stderr, "CLONE_FILES") {
		t.Fatalf("dump error %q does not say %q", stderr, want)
	}
	for _, pid := range pids[1:] {
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if !strings.Contains(string(status), "TracerPid:\t0\n") {
			t.Fatalf("process %d traced after refused dump", pid)
		}
	}
	p.checkUnharmed(t, store)
}

// tickField returns the word after name in a tick line ("" if none).
func tickField(line, name string) string {
	f := strings.Fields(line)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == name {
			return f[i+1]
		}
	}
	return ""
}

// pgids lists "pid:pgid" of each pid.
func pgids(t *testing.T, pids []int) string {
	var out []string
	for _, pid := range pids {
		out = append(out, fmt.Sprintf("%d:%d", pid, readSessionStat(t, pid).PGID))
	}
	return strings.Join(out, " ")
}

// TestRestoreSignalDispositions: signals the restorer itself ignores (run
// under nohup, or a shell's trap "") must not leak into the restored
// program: SigIgn and SigCgt are the dump's.
func TestRestoreSignalDispositions(t *testing.T) {
	p := startProgram(t, "pthreads", 4)
	sig := func(pid int) string {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		var out []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "SigIgn:") || strings.HasPrefix(l, "SigCgt:") {
				out = append(out, l)
			}
		}
		return strings.Join(out, " ")
	}
	before := sig(p.Pid)
	dir, pids := dumpKill(t, p.Pid)
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	cmd := exec.Command("sh", "-c", `trap "" HUP INT USR2; exec "$0" restore "$1"`, filepath.Join(built(t), "ckptfs"), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	t.Cleanup(func() { unix.Kill(p.Pid, unix.SIGKILL); waitGone(t, p.Pid) })
	if after := sig(pids[0]); after != before {
		t.Fatalf("signal dispositions after restore %q, at dump %q", after, before)
	}
	p.waitTicks(t, 2)
	p.checkHealthy(t)
}

// TestRestoreLeaveStopped: with --leave-stopped every restored process is
// stopped and prints nothing until SIGCONT.
func TestRestoreLeaveStopped(t *testing.T) {
	p := startProgram(t, "ipc-pair", 0)
	p.waitTicks(t, 2)
	dir, pids := dumpKill(t, p.Pid)
	restoreFrom(t, dir, pids, "--leave-stopped")
	for _, pid := range pids {
		waitState(t, pid, "T")
	}
	n := len(p.ticks())
	time.Sleep(300 * time.Millisecond)
	if got := len(p.ticks()); got != n {
		t.Fatalf("stopped program printed %d ticks", got-n)
	}
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGCONT)
	}
	p.waitTicks(t, 2)
	p.checkHealthy(t)
}
