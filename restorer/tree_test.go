package restorer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// dumpForker starts the forker program, waits until its child printed,
// dumps both with --kill and returns the parent, the child's pid and the
// checkpoint.
func dumpForker(t *testing.T) (p *program, child int, dir string) {
	t.Helper()
	p = startC(t, "forker")
	p.waitTicks(t, 4)
	for _, l := range p.ticks() {
		var pid int
		fmt.Sscanf(l, "forker %d", &pid)
		if pid != p.pid {
			child = pid
		}
	}
	if child == 0 {
		t.Fatal("child never printed")
	}
	dir = dumpKill(t, p)
	waitGone(t, child)
	return p, child, dir
}

// TestRestoreTree restores a parent and its forked child: both get their
// pids back, the child stays the parent's child.
func TestRestoreTree(t *testing.T) {
	p, child, dir := dumpForker(t)
	root := restoreWithChild(t, dir, child)
	p.waitTicks(t, 6)
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
	s := string(b)
	if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) < 2 || f[1] != fmt.Sprint(root) {
		t.Fatalf("child %d stat %q: parent is not %d", child, s, root)
	}
	n := map[int]int{}
	for _, l := range p.ticks() {
		if !strings.HasSuffix(l, " ok") {
			t.Fatalf("bad line %q", l)
		}
		var pid int
		fmt.Sscanf(l, "forker %d", &pid)
		n[pid]++
	}
	time.Sleep(300 * time.Millisecond)
	t.Logf("ticks per pid: %v", n)
	if len(n) != 2 {
		t.Fatalf("ticks from %v, want %d and %d", n, root, child)
	}
}

// TestRestorePipe restores a parent and child joined by a pipe with bytes
// in flight: the child must go on reading the sequence without a gap.
func TestRestorePipe(t *testing.T) {
	p := startC(t, "piper")
	p.waitTicks(t, 5)
	var child int
	fmt.Sscanf(p.ticks()[0], "piper %d", &child)
	dir := dumpKill(t, p)
	waitGone(t, child)
	c, err := image.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range c.Objects {
		t.Logf("object %s %s: %d bytes in flight", o.ID, o.Kind, len(o.Data))
	}
	root := restoreWithChild(t, dir, child)
	p.waitTicks(t, 5)
	for _, l := range p.ticks() {
		if !strings.HasSuffix(l, " ok") {
			t.Fatalf("child printed %q after restore:\n%s", l, strings.Join(p.lines(), "\n"))
		}
	}
	// Parent and child share their stdout file description again.
	same, err := ptrace.SameFile(root, 1, child, 1)
	if err != nil || !same {
		t.Errorf("fd 1 of %d and %d: same file description %v %v", root, child, same, err)
	}
}

// startC builds testdata/<name>.c, starts it in its own process group with
// its output appended to a file, and kills the group when the test ends.
func startC(t *testing.T, name string) *program {
	t.Helper()
	exe := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("gcc", "-O1", "-o", exe, "testdata/"+name+".c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v %s", err, out)
	}
	out := filepath.Join(t.TempDir(), name+".out")
	f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	p := &program{pid: cmd.Process.Pid, out: out, cmd: cmd}
	t.Cleanup(func() {
		if !p.reaped {
			unix.Kill(-p.pid, unix.SIGKILL)
			cmd.Wait()
		}
	})
	return p
}

// restoreWithChild restores dir, a parent and its child, and kills and
// reaps both when the test ends: the restored child is reparented to this
// test (a subreaper) once the root dies.
func restoreWithChild(t *testing.T, dir string, child int) int {
	t.Helper()
	root := restore(t, dir)
	restoreWithChildCleanup(t, root, child)
	return root
}

// restoreWithChildCleanup kills and reaps a restored root and its child
// when the test ends.
func restoreWithChildCleanup(t *testing.T, root, child int) {
	t.Cleanup(func() {
		unix.Kill(child, unix.SIGKILL)
		unix.Kill(root, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(root, &ws, 0, nil)
		unix.Wait4(child, &ws, 0, nil)
	})
}

// TestKindTables: every fd kind the image knows is made by a restorer
// kind (but "other", which image.Refusal refuses), and every object kind
// but SysV segments (reached by vmas, kind_sysvshm.go) too.
func TestKindTables(t *testing.T) {
	for _, k := range image.FDKinds() {
		if _, ok := fdKinds[k]; !ok && k != image.FDOther {
			t.Errorf("fd kind %s has no restorer kind", k)
		}
	}
	for _, k := range image.ObjectKinds() {
		if _, ok := objectKinds[k]; !ok && k != image.ObjSysVShm {
			t.Errorf("object kind %s has no restorer kind", k)
		}
	}
}

// TestCheckFDRefusal: preflight refuses what the dump refuses, by the same
// rule (image.Refusal), and what only the restorer's kind checks.
func TestCheckFDRefusal(t *testing.T) {
	tk := &image.Task{PID: 100}
	c := &image.Checkpoint{Tasks: []*image.Task{tk}}
	for _, x := range []struct {
		f    *image.FD
		want string
	}{
		{&image.FD{Num: 5, Kind: image.FDOther, Path: "anon_inode:[io_uring]"}, "cannot restore this kind of fd"},
		{&image.FD{Num: 5, Kind: image.FDInotify, Path: "anon_inode:inotify", Extra: []string{"inotify-unresolved: wd=1 ino=7 no file handle"}},
			"an inotify watch without a path (wd=1 ino=7 no file handle)"},
		{&image.FD{Num: 5, Kind: image.FDEpoll, Path: "anon_inode:[eventpoll]", Extra: []string{"tfd: 4 events: zz data: 0"}}, "bad watch line"},
		{&image.FD{Num: 5, Kind: image.FDDir, Path: "/gone", Deleted: true}, "/gone was deleted at dump time"},
		{&image.FD{Num: 5, Kind: image.FDPipe, Path: "pipe:[9]"}, "cannot restore this kind of fd"},
		{&image.FD{Num: 5, Kind: image.FDPipe, Path: "pipe:[9]", Object: "pipe-9"}, "object pipe-9 is not in the checkpoint"},
	} {
		tk.FDs = []*image.FD{x.f}
		err := checkFD(c, tk, x.f, map[int]string{})
		if err == nil || !strings.Contains(err.Error(), x.want) || !strings.HasPrefix(err.Error(), "task 100: fd 5") {
			t.Errorf("%s %s: %v, want %q", x.f.Kind, x.f.Path, err, x.want)
		}
	}
	ok := &image.FD{Num: 5, Kind: image.FDEventfd, Path: "anon_inode:[eventfd]", Extra: image.Eventfd{Count: 1}.Lines()}
	if err := checkFD(c, tk, ok, map[int]string{}); err != nil {
		t.Errorf("eventfd refused: %v", err)
	}
}
