//go:build linux && amd64

package inject_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
			// All threads at once (the dumper's way): the same values,
			// and a caller's call in the main thread's job.
			var jobs []*inject.Job
			xs := map[int]*inject.Extras{}
			var pid2 uint64
			for _, tid := range tids {
				x := &inject.Extras{}
				var more func(uint64) []inject.Call
				if tid == pid {
					more = func(uint64) []inject.Call {
						return []inject.Call{{Name: "getpid", Nr: unix.SYS_GETPID, Done: func(v uint64) error { pid2 = v; return nil }}}
					}
				}
				j, err := inject.ExtrasJob(tid, tramp, tid == pid, x, more)
				if err != nil {
					return err
				}
				jobs, xs[tid] = append(jobs, j), x
			}
			if err := inject.Batch(jobs); err != nil {
				return err
			}
			if int(pid2) != pid {
				t.Errorf("getpid in the main thread's job: %d, want %d", pid2, pid)
			}
			for _, tid := range tids {
				one, err := inject.ReadExtras(tid, tramp, tid == pid)
				if err != nil {
					return err
				}
				if *xs[tid] != one {
					t.Errorf("thread %d: batch read %+v, alone %+v", tid, *xs[tid], one)
				}
			}
			// The vdso offset found once serves the next search.
			var vt inject.VdsoTrampolines
			b, _ := os.ReadFile("/proc/" + itoa(pid) + "/maps")
			for _, l := range strings.Split(string(b), "\n") {
				if !strings.HasSuffix(l, "[vdso]") {
					continue
				}
				var start, end uint64
				fmt.Sscanf(l, "%x-%x", &start, &end)
				for range 2 {
					a, err := vt.Find(pid, start, end)
					if err != nil {
						return err
					}
					insn := make([]byte, 2)
					if err := inject.ReadMem(pid, a, insn); err != nil || insn[0] != 0x0f || insn[1] != 0x05 {
						t.Errorf("vdso trampoline %#x: % x %v", a, insn, err)
					}
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
