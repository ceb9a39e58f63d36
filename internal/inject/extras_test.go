package inject_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

const goProg = `package main

import "time"

func main() {
	for i := 0; i < 4; i++ {
		go func() { for { time.Sleep(time.Millisecond) } }()
	}
	time.Sleep(time.Hour)
}
`

// TestReadExtras reads the extras of every thread of a Go program (each
// has a sigaltstack) and of sleep (glibc: clear_child_tid, robust list)
// and checks both keep running.
func TestReadExtras(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.go"), []byte(goProg), 0o644)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\ngo 1.21\n"), 0o644)
	build := exec.Command("go", "build", "-o", "prog", ".")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v %s", err, out)
	}
	for _, c := range []struct {
		argv    []string
		altWant bool
	}{{[]string{filepath.Join(dir, "prog")}, true}, {[]string{"sleep", "100"}, false}} {
		cmd := exec.Command(c.argv[0], c.argv[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid := cmd.Process.Pid
		time.Sleep(200 * time.Millisecond)
		tr := inject.NewTracer()
		ents, _ := os.ReadDir("/proc/" + itoa(pid) + "/task")
		err := tr.Do(func() error {
			// Like the dumper: every thread stopped before any injection.
			var tids []int
			for _, e := range ents {
				tid := atoi(e.Name())
				if err := ptrace.Seize(tid, 0); err != nil {
					return err
				}
				if err := ptrace.Interrupt(tid); err != nil {
					return err
				}
				if _, err := ptrace.Wait(tid); err != nil {
					return err
				}
				tids = append(tids, tid)
			}
			tramp, err := inject.FindSyscallInsn(pid)
			if err != nil {
				return err
			}
			for _, tid := range tids {
				x, err := inject.ReadExtras(tid, tramp, tid == pid)
				if err != nil {
					return err
				}
				t.Logf("%s thread %d: %+v", filepath.Base(c.argv[0]), tid, x)
				if !x.AltStack.Disabled() != c.altWant {
					t.Errorf("thread %d altstack %+v", tid, x.AltStack)
				}
				if !c.altWant && (x.ClearTID == 0 || x.RobustHead == 0) {
					t.Errorf("glibc thread %d: %+v", tid, x)
				}
			}
			for _, tid := range tids {
				if err := ptrace.Detach(tid, 0); err != nil {
					return err
				}
			}
			return nil
		})
		tr.Close()
		time.Sleep(100 * time.Millisecond)
		var ws unix.WaitStatus
		if wp, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); wp != 0 {
			t.Errorf("%s died after ReadExtras: %#x", c.argv[0], uint32(ws))
		}
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func itoa(n int) string { return fmtInt(n) }
