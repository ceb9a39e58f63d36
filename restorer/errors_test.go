package restorer

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// copyTree copies a checkpoint directory (as cp -a would, sparse files
// written densely are fine for these tests).
func copyTree(t *testing.T, from string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "copy")
	out, err := runCmd("cp", "-a", from, to)
	if err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return to
}

func runCmd(name string, args ...string) (string, error) {
	b, err := execCommand(name, args...).CombinedOutput()
	return string(b), err
}

// children lists the pids whose parent is this test process.
func children() []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if ppid, _ := strconv.Atoi(f[1]); ppid == os.Getpid() {
			out = append(out, pid)
		}
	}
	return out
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("restore succeeded, want an error with %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not mention %q", err, p)
		}
	}
	t.Logf("error as expected: %v", err)
}

// TestRestoreErrors covers the failures that must leave nothing behind.
func TestRestoreErrors(t *testing.T) {
	// The program runs from a copy of its binary that the test can change.
	exe := filepath.Join(t.TempDir(), "counter")
	b, err := os.ReadFile(filepath.Join(built(t), "counter-pthreads"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	p := startArgv(t, []string{exe, "4", "100", "2"})
	dir := dumpKill(t, p)
	before := children()

	t.Run("PidInUse", func(t *testing.T) {
		pid := restore(t, dir)
		_, err := Restore(dir, Options{})
		wantErr(t, err, fmt.Sprintf("pid %d is still in use by counter", pid))
	})
	t.Run("Zombie", func(t *testing.T) {
		pid, err := Restore(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		unix.Kill(pid, unix.SIGKILL)
		for {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if strings.Contains(string(b), ") Z ") {
				break
			}
		}
		_, err = Restore(dir, Options{})
		wantErr(t, err, fmt.Sprintf("pid %d is still in use by counter (zombie not yet reaped)", pid))
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
	})
	t.Run("GarbledFile", func(t *testing.T) {
		c := copyTree(t, dir)
		regs := filepath.Join(c, "tasks", strconv.Itoa(p.pid), "threads", strconv.Itoa(p.pid), "regs")
		if err := os.WriteFile(regs, []byte("rip: zzz\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Restore(c, Options{})
		wantErr(t, err, regs)
	})
	t.Run("MissingPages", func(t *testing.T) {
		c := copyTree(t, dir)
		pages, _ := filepath.Glob(filepath.Join(c, "tasks", "*", "vmas", "*", "pages"))
		if err := os.Remove(pages[len(pages)/2]); err != nil {
			t.Fatal(err)
		}
		_, err := Restore(c, Options{})
		wantErr(t, err, pages[len(pages)/2])
	})
	t.Run("MappedFileChanged", func(t *testing.T) {
		f, err := os.OpenFile(exe, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte("x"))
		f.Close()
		defer os.WriteFile(exe, b, 0o755)
		_, err = Restore(dir, Options{})
		wantErr(t, err, exe, "size changed")
	})
	t.Run("MappedFileMissing", func(t *testing.T) {
		os.Rename(exe, exe+".moved")
		defer os.Rename(exe+".moved", exe)
		_, err := Restore(dir, Options{})
		wantErr(t, err, exe, "no such file")
	})
	t.Run("OutputFileGrew", func(t *testing.T) {
		// An output file that grew is fine (another restore wrote it).
		pid := restore(t, dir)
		p.waitTicks(t, 1)
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
		pid = restore(t, dir)
		p.waitTicks(t, 1)
		unix.Kill(pid, unix.SIGKILL)
		unix.Wait4(pid, &ws, 0, nil)
	})
	t.Run("OutputFileShrank", func(t *testing.T) {
		b, _ := os.ReadFile(p.out)
		defer os.WriteFile(p.out, b, 0o644)
		os.WriteFile(p.out, b[:10], 0o644)
		_, err := Restore(dir, Options{})
		wantErr(t, err, "fd 1", p.out, "changed size")
	})
	for _, point := range []string{"created", "threads", "finished"} {
		t.Run("KilledOnFailure/"+point, func(t *testing.T) {
			failAt = point
			defer func() { failAt = "" }()
			_, err := Restore(dir, Options{})
			wantErr(t, err, "failpoint "+point)
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.pid)); err == nil {
				t.Fatalf("pid %d exists after a failed restore", p.pid)
			}
			if got := children(); len(got) != len(before) {
				t.Fatalf("children after a failed restore: %v, before %v", got, before)
			}
		})
	}
	t.Run("RestoresAfterAll", func(t *testing.T) {
		pid := restore(t, dir)
		p.waitTicks(t, 2)
		checkSame(t, dir, pid)
	})
}

func TestFindFree(t *testing.T) {
	avoid := []area{{"a", lowAddr, lowAddr + 0x3000}, {"b", lowAddr + 0x4000, lowAddr + 0x5000}}
	if got, _ := findFree(0x1000, avoid); got != lowAddr+0x3000 {
		t.Errorf("findFree(0x1000) = %#x", got)
	}
	if got, _ := findFree(0x2000, avoid); got != lowAddr+0x5000 {
		t.Errorf("findFree(0x2000) = %#x", got)
	}
}

func TestVdsoShape(t *testing.T) {
	here := []area{{"[vvar]", 0x1000, 0x5000}, {"[vvar_vclock]", 0x5000, 0x7000}, {"[vdso]", 0x7000, 0x9000}}
	moved := []area{{"[vvar]", 0x11000, 0x15000}, {"[vvar_vclock]", 0x15000, 0x17000}, {"[vdso]", 0x17000, 0x19000}}
	if !sameShape(here, moved) {
		t.Error("moved unit not the same shape")
	}
	old := []area{{"[vvar]", 0x1000, 0x5000}, {"[vdso]", 0x5000, 0x7000}}
	if sameShape(here, old) {
		t.Error("a unit without [vvar_vclock] has the same shape")
	}
	task := &image.Task{PID: 7, VMAs: []*image.VMA{
		{Start: 0x1000, End: 0x5000, Name: "[vvar]", Kind: image.VMAVvar},
		{Start: 0x5000, End: 0x7000, Name: "[vdso]", Kind: image.VMAVdso},
	}}
	err := checkVdso(task)
	if err == nil || !strings.Contains(err.Error(), "checkpoint needs a vdso layout this kernel lacks") {
		t.Errorf("checkVdso of an old layout: %v", err)
	}
}
