package restorer

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/dumper"
	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// The security tests run tests/progs/security.c, which limits its own
// privileges and checks each tick that the limits still hold, dump it,
// restore it and compare what /proc says before and after.

var (
	securityOnce sync.Once
	securityExe  string
	securityErr  error
)

func securityProg(t *testing.T) string {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: the program drops capabilities a root process has")
	}
	dir := built(t)
	securityOnce.Do(func() {
		securityExe = filepath.Join(dir, "security")
		if out, err := exec.Command("gcc", "-O1", "-Wall", "-pthread", "-o", securityExe, "../tests/progs/security.c").CombinedOutput(); err != nil {
			securityErr = fmt.Errorf("gcc: %v\n%s", err, out)
		}
	})
	if securityErr != nil {
		t.Fatal(securityErr)
	}
	return securityExe
}

func startSecurity(t *testing.T, mode string) *program {
	t.Helper()
	p := startArgv(t, []string{securityProg(t), mode})
	// A program that left root must still reach its output: the restore
	// reopens it as the task's uid, through every directory above it.
	os.Chmod(filepath.Dir(filepath.Dir(p.out)), 0o755)
	os.Chmod(filepath.Dir(p.out), 0o755)
	os.Chmod(p.out, 0o666)
	return p
}

// privLines returns, per thread, the /proc status lines that say what the
// thread may do.
func privLines(t *testing.T, pid int) map[int]string {
	t.Helper()
	tids, err := proc.Tasks(pid)
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
		if err != nil {
			t.Fatal(err)
		}
		var keep []string
		for _, l := range strings.Split(string(b), "\n") {
			for _, k := range []string{"Uid:", "Gid:", "Groups:", "Cap", "NoNewPrivs:", "Seccomp:", "Seccomp_filters:"} {
				if strings.HasPrefix(l, k) {
					keep = append(keep, l)
				}
			}
		}
		pers, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/personality", pid, tid))
		out[tid] = strings.Join(keep, "\n") + "\npersonality: " + strings.TrimSpace(string(pers))
	}
	return out
}

func samePrivs(t *testing.T, before, after map[int]string) {
	t.Helper()
	if len(before) != len(after) {
		t.Fatalf("%d threads before, %d after", len(before), len(after))
	}
	for tid, b := range before {
		if after[tid] != b {
			t.Errorf("thread %d before the dump:\n%s\nafter the restore:\n%s", tid, b, after[tid])
		}
	}
}

// checkTicks waits for n more ticks and fails on any that is not ok.
func checkTicks(t *testing.T, p *program, n int) {
	t.Helper()
	p.waitTicks(t, n)
	for _, l := range p.ticks() {
		if !strings.HasSuffix(l, " ok") {
			t.Fatalf("program printed %q", l)
		}
	}
}

func testSecurityRoundTrip(t *testing.T, mode string, want ...string) {
	p := startSecurity(t, mode)
	before := privLines(t, p.pid)
	for _, w := range want {
		if !strings.Contains(before[p.pid], w) {
			t.Fatalf("the program did not set itself up: want %q in\n%s", w, before[p.pid])
		}
	}
	dir := dumpKill(t, p)
	sec, err := os.ReadFile(filepath.Join(dir, "tasks", strconv.Itoa(p.pid), "security"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tasks/%d/security:\n%s", p.pid, sec)
	pid := restore(t, dir)
	samePrivs(t, before, privLines(t, pid))
	checkTicks(t, p, 3)
	sameSecurityFiles(t, dir, redump(t, pid))
	checkTicks(t, p, 2)
}

// redump dumps a restored tree again, leaving it running, and writes the
// checkpoint as plain files.
func redump(t *testing.T, pid int) string {
	t.Helper()
	store, err := dedup.Open(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	res, err := dumper.Dump(store, pid, dumper.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "redump")
	c, err := store.Load(res.Checkpoint.ID) // with its page tables, which the dump streamed
	if err != nil {
		t.Fatal(err)
	}
	if err := image.WriteTree(dir, image.Render(c, store)); err != nil {
		t.Fatal(err)
	}
	return dir
}

// sameSecurityFiles compares the security files and seccomp filters of
// two checkpoints of the same tree: what the restore gave back is what
// the first dump saw, securebits, dumpable and pdeathsig included.
func sameSecurityFiles(t *testing.T, a, b string) {
	t.Helper()
	var files []string
	for _, pat := range []string{"tasks/*/security", "tasks/*/seccomp/*", "tasks/*/threads/*/security", "tasks/*/threads/*/seccomp/*"} {
		fa, _ := filepath.Glob(filepath.Join(a, pat))
		fb, _ := filepath.Glob(filepath.Join(b, pat))
		if len(fa) != len(fb) {
			t.Errorf("%s: %d files in the first dump, %d in the dump of the restored tree", pat, len(fa), len(fb))
		}
		files = append(files, fa...)
	}
	if len(files) == 0 {
		t.Fatal("no security file in the checkpoint")
	}
	for _, fa := range files {
		rel, _ := filepath.Rel(a, fa)
		x, _ := os.ReadFile(fa)
		y, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs after the restore (%v):\n%s\nnow:\n%s", rel, err, x, y)
		}
	}
}

// TestRestoreCapsDropped: a root process that emptied every capability set
// and locked its securebits comes back without any capability.
func TestRestoreCapsDropped(t *testing.T) {
	testSecurityRoundTrip(t, "caps", "CapPrm:\t0000000000000000", "CapBnd:\t0000000000000000")
}

// TestRestoreAmbientCaps: a uid-65534 process with one capability in every
// set, ambient included, gets exactly that one back.
func TestRestoreAmbientCaps(t *testing.T) {
	testSecurityRoundTrip(t, "ambient", "Uid:\t65534", "CapAmb:\t0000000000000400", "CapBnd:\t0000000000000400")
}

// TestRestoreSeccomp: no_new_privs and a filter (getppid fails with EPERM)
// hold after the restore; the program checks the filter itself each tick.
func TestRestoreSeccomp(t *testing.T) {
	testSecurityRoundTrip(t, "seccomp", "NoNewPrivs:\t1", "Seccomp:\t2", "Seccomp_filters:\t1")
}

// TestRestoreFilterWithoutNoNewPrivs: a filter installed with
// CAP_SYS_ADMIN instead of no_new_privs, by a process that then dropped
// every capability: the restore installs it before the capabilities go.
func TestRestoreFilterWithoutNoNewPrivs(t *testing.T) {
	testSecurityRoundTrip(t, "admin", "NoNewPrivs:\t0", "Seccomp:\t2", "CapEff:\t0000000000000000")
}

// TestRestoreSandbox: a filter that kills the process on munmap and denies
// prctl, calls the dump and the restore inject (the restore's last one is a
// munmap): both suspend the filter (PTRACE_O_SUSPEND_SECCOMP) meanwhile.
func TestRestoreSandbox(t *testing.T) {
	// A dump that lets the program run on leaves its filter in force
	// (the detach ends the suspension): it checks prctl still fails.
	p := startSecurity(t, "sandbox")
	redump(t, p.pid)
	checkTicks(t, p, 2)
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p.reaped = true

	testSecurityRoundTrip(t, "sandbox", "NoNewPrivs:\t1", "Seccomp:\t2", "Seccomp_filters:\t1")
}

// TestRestoreSeccompUnsuspended: without PTRACE_O_SUSPEND_SECCOMP (a
// restorer without CAP_SYS_ADMIN) the filters are installed last and must
// let the restore's final munmap through: the getppid filter does and the
// program runs on; the sandbox, which kills on munmap, is refused before
// its filter is installed, and nothing is left running.
func TestRestoreSeccompUnsuspended(t *testing.T) {
	noSuspendSeccomp = true
	defer func() { noSuspendSeccomp = false }()
	testSecurityRoundTrip(t, "threads", "NoNewPrivs:\t1", "Seccomp:\t2")

	p := startSecurity(t, "sandbox")
	dir := dumpKill(t, p)
	_, err := Restore(dir, Options{})
	if err == nil || !strings.Contains(err.Error(), "munmap of its trampoline") || !strings.Contains(err.Error(), "0x80000000") {
		t.Fatalf("restore error %v, want the filter's KILL_PROCESS (0x80000000) for the munmap", err)
	}
	t.Logf("refused: %v", err)
	waitGone(t, p.pid)
}

// TestRestoreSeccompThreads: threads with different filter stacks (one
// shared, one more of their own) each get their own stack back.
func TestRestoreSeccompThreads(t *testing.T) {
	p := startSecurity(t, "threads")
	before := privLines(t, p.pid)
	n2 := 0
	for _, l := range before {
		if strings.Contains(l, "Seccomp_filters:\t2") {
			n2++
		}
	}
	if len(before) != 3 || n2 != 2 {
		t.Fatalf("want 3 threads, 2 with 2 filters: %v", before)
	}
	dir := dumpKill(t, p)
	th, _ := filepath.Glob(filepath.Join(dir, "tasks", strconv.Itoa(p.pid), "threads", "*", "seccomp", "1"))
	if len(th) != 2 {
		t.Errorf("want two threads with a seccomp/1 of their own, got %v", th)
	}
	pid := restore(t, dir)
	samePrivs(t, before, privLines(t, pid))
	checkTicks(t, p, 3)
	sameSecurityFiles(t, dir, redump(t, pid)) // the stacks in their order
}

// TestRestoreProcessFlags: personality (ADDR_NO_RANDOMIZE), dumpable 0 and
// a child's parent-death signal come back: the child checks them each
// tick, and dies of SIGTERM when its restored parent is killed.
func TestRestoreProcessFlags(t *testing.T) {
	p := startSecurity(t, "misc")
	p.waitTicks(t, 1)
	kids, err := proc.Children(p.pid)
	if err != nil || len(kids) != 1 {
		t.Fatalf("children of %d: %v %v", p.pid, kids, err)
	}
	child := kids[0]
	before := privLines(t, p.pid)
	beforeChild := privLines(t, child)
	if !strings.Contains(before[p.pid], "personality: 00040000") {
		t.Fatalf("personality not set: %s", before[p.pid])
	}
	dir := dumpKill(t, p)
	waitGone(t, child)
	root := restoreWithChild(t, dir, child)
	samePrivs(t, before, privLines(t, root))
	samePrivs(t, beforeChild, privLines(t, child))
	checkTicks(t, p, 3)
	sameSecurityFiles(t, dir, redump(t, root))
	unix.Kill(root, unix.SIGKILL)
	var ws unix.WaitStatus
	unix.Wait4(root, &ws, 0, nil)
	if _, err := unix.Wait4(child, &ws, 0, nil); err != nil || !ws.Signaled() || ws.Signal() != unix.SIGTERM {
		t.Fatalf("child after its parent died: %v, status %v (want killed by SIGTERM, its pdeathsig)", err, ws)
	}
}

// TestDumpRefusesSecurity: a thread in seccomp strict mode and a filter
// that sends user notifications cannot be restored: the dump says so,
// naming the thread, and the program runs on unharmed.
func TestDumpRefusesSecurity(t *testing.T) {
	for _, c := range []struct{ mode, want string }{
		{"strict", "seccomp strict mode (1)"},
		{"notify", "sends user notifications"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			p := startSecurity(t, c.mode)
			store, err := dedup.Open(filepath.Join(t.TempDir(), "store"))
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			_, err = dumper.Dump(store, p.pid, dumper.Options{})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), fmt.Sprintf("process %d thread ", p.pid)) {
				t.Fatalf("dump error %v, want one naming process %d, a thread and %q", err, p.pid, c.want)
			}
			t.Logf("refused: %v", err)
			if list, _ := store.List(); len(list) != 0 {
				t.Fatalf("refused dump left checkpoints %v", list)
			}
			status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
			if !strings.Contains(string(status), "TracerPid:\t0\n") {
				t.Fatal("program still traced after the refused dump")
			}
			checkTicks(t, p, 2)
		})
	}
}
