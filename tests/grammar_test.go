package tests

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestNewlineFileName: a program holding open, read-write, a file named
// "a<newline>path: /etc/hostname" is dumped (--kill) and restored; the
// restored fd is that very file, and /etc/hostname is never opened. A tree
// writer without escaping would have written two path lines, the second
// winning.
func TestNewlineFileName(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (ptrace of the test program, FUSE mount, restore with pids)")
	}
	hostname, err := os.ReadFile("/etc/hostname")
	if err != nil {
		t.Skipf("no /etc/hostname to guard: %v", err)
	}
	dir := t.TempDir()
	name := filepath.Join(dir, "a\npath: /etc/hostname")
	p := startArgv(t, "newline", []string{buildProg(t, "newline"), dir})
	p.waitTicks(t, 2)
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	id := lastLine(ckptfs(t, "dump", "-s", m.store, "--kill", itoa(p.Pid)))
	waitGone(t, p.Pid)

	tree := filepath.Join(m.mnt, id)
	fdinfo, err := os.ReadFile(filepath.Join(tree, "tasks", itoa(p.Pid), "fdinfo", "3"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(fdinfo, []byte("\npath: "+strconv.Quote(name)+"\n")) || bytes.Count(fdinfo, []byte("\npath:")) != 1 {
		t.Fatalf("fdinfo/3 does not hold the name as one quoted path line:\n%s", fdinfo)
	}
	if target, err := os.Readlink(filepath.Join(tree, "tasks", itoa(p.Pid), "fds", "3")); err != nil || target != name {
		t.Errorf("fds/3 -> %q, %v; want %q", target, err, name)
	}
	// A cp -a copy keeps memory private.
	cp := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", tree, cp).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	pages, _ := filepath.Glob(filepath.Join(cp, "tasks", itoa(p.Pid), "vmas", "*", "pages"))
	for _, rel := range append(pages, filepath.Join(cp, "tasks", itoa(p.Pid), "environ")) {
		if st, err := os.Stat(rel); err != nil || st.Mode().Perm() != 0o400 {
			t.Errorf("%s in a cp -a copy: %v %v, want mode 0400", rel, st.Mode(), err)
		}
	}

	before, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	if got := lastLine(ckptfs(t, "restore", tree)); got != itoa(p.Pid) {
		t.Fatalf("restore printed %q, want pid %d", got, p.Pid)
	}
	t.Cleanup(func() { killRestored(t, p.Pid) })
	p.waitTicks(t, 3)
	p.checkHealthy(t)
	if target, err := os.Readlink("/proc/" + itoa(p.Pid) + "/fd/3"); err != nil || target != name {
		t.Fatalf("restored fd 3 -> %q, %v; want %q", target, err, name)
	}
	after, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) <= len(before) || !bytes.HasPrefix(after, before) || !bytes.Contains(after[len(before):], []byte("marker ")) {
		t.Fatalf("the restored program's markers did not land in %q: %d bytes before, %d after", name, len(before), len(after))
	}
	if now, _ := os.ReadFile("/etc/hostname"); !bytes.Equal(now, hostname) {
		t.Fatalf("/etc/hostname changed: %q -> %q", hostname, now)
	}
}

// killRestored kills a restored process and reaps it (we are its subreaper).
func killRestored(t testing.TB, pid int) {
	unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, 0, nil)
	waitGone(t, pid)
}

// The golden trees of testdata/trees/ were dumped from tests/progs/tiny.c
// mapped as goldenExe, pid goldenPID, stdout on goldenTicks (30 bytes
// written by dump time); see testdata/trees/README.md.
const (
	goldenDir   = "/tmp/ckptfs-golden"
	goldenExe   = goldenDir + "/tiny"
	goldenTicks = goldenDir + "/ticks"
	goldenPID   = 31992
)

// TestRestoreGoldenTrees restores the committed golden trees of each tree
// format: old checkpoints stay restorable.
func TestRestoreGoldenTrees(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (restore with pids)")
	}
	_, file, _, _ := runtime.Caller(0)
	trees := filepath.Join(filepath.Dir(file), "..", "testdata", "trees")
	for _, format := range []string{"format1", "format2", "format3"} {
		t.Run(format, func(t *testing.T) {
			tree := filepath.Join(trees, format)
			if _, err := os.Stat(tree); err != nil {
				t.Fatal(err)
			}
			if err := unix.Kill(goldenPID, 0); !errors.Is(err, unix.ESRCH) {
				t.Skipf("pid %d, which the golden tree restores, is in use on this machine", goldenPID)
			}
			installGolden(t, trees)
			unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
			defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
			out, errOut, err := run(t, "restore", tree)
			if err != nil && strings.Contains(errOut, "is still in use") {
				// Another program took the pid after the check above
				// (pids wrap within a minute here under load).
				t.Skipf("pid %d was taken meanwhile: %s", goldenPID, errOut)
			}
			if err != nil {
				t.Fatalf("ckptfs restore %s: %v\n%s", tree, err, errOut)
			}
			if got := lastLine(out); got != itoa(goldenPID) {
				t.Fatalf("restore printed %q, want pid %d", got, goldenPID)
			}
			defer killRestored(t, goldenPID)
			deadline := time.Now().Add(20 * time.Second)
			for {
				b, _ := os.ReadFile(goldenTicks)
				if len(b) >= 30+3*len("tick\n") {
					if strings.Trim(string(b[30:]), "tick\n") != "" {
						t.Fatalf("restored tiny wrote %q", b[30:])
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("restored tiny wrote %d bytes in 20s, want more than 30", len(b))
				}
				time.Sleep(20 * time.Millisecond)
			}
			if exe, err := os.Readlink("/proc/" + itoa(goldenPID) + "/exe"); err != nil || exe != goldenExe {
				t.Errorf("restored exe %q, %v", exe, err)
			}
		})
	}
}

// installGolden puts the golden program where the trees map it and a
// 30-byte ticks file, removing what it made when the test ends.
func installGolden(t *testing.T, trees string) {
	t.Helper()
	made := false
	if err := os.Mkdir(goldenDir, 0o755); err == nil {
		made = true
	} else if !os.IsExist(err) {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(trees, "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenExe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenTicks, bytes.Repeat([]byte("tick\n"), 6), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(goldenExe)
		os.Remove(goldenTicks)
		if made {
			os.Remove(goldenDir)
		}
	})
}

// TestRestoreRefusesFIFOInTree: a copy whose cmdline or pages is a FIFO is
// refused by restore with an error naming it, not a hang, and creates no
// process.
func TestRestoreRefusesFIFOInTree(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (restore)")
	}
	_, file, _, _ := runtime.Caller(0)
	golden := filepath.Join(filepath.Dir(file), "..", "testdata", "trees", "format2")
	pages, _ := filepath.Glob(filepath.Join(golden, "tasks", itoa(goldenPID), "vmas", "7ff*", "pages"))
	if len(pages) == 0 {
		t.Fatal("golden tree has no stack pages")
	}
	stackPages, _ := filepath.Rel(golden, pages[0])
	for _, rel := range []string{filepath.Join("tasks", itoa(goldenPID), "cmdline"), stackPages} {
		t.Run(filepath.Base(rel), func(t *testing.T) {
			cp := filepath.Join(t.TempDir(), "copy")
			if out, err := exec.Command("cp", "-a", golden, cp).CombinedOutput(); err != nil {
				t.Fatalf("cp -a: %v\n%s", err, out)
			}
			fifo := filepath.Join(cp, rel)
			os.Remove(fifo)
			if err := unix.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			free := errors.Is(unix.Kill(goldenPID, 0), unix.ESRCH)
			_, errOut, err := ckptfsErr(t, "restore", cp)
			if err == nil || !strings.Contains(errOut, fifo) || !strings.Contains(errOut, "FIFO") {
				t.Fatalf("restore of a tree with a FIFO %s: %v\n%s", rel, err, errOut)
			}
			if free && unix.Kill(goldenPID, 0) == nil {
				t.Fatalf("pid %d exists after the refused restore", goldenPID)
			}
		})
	}
}
