package inject_test

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/stub"
)

// TestTraceHook: the hook sees an injected call's start with its
// arguments and its end with its result or errno.
func TestTraceHook(t *testing.T) {
	tr := inject.NewTracer()
	t.Cleanup(tr.Close)
	pid := startStub(t, tr)
	var calls []inject.Traced
	inject.SetTrace(func(c inject.Traced) { calls = append(calls, c) })
	defer inject.SetTrace(nil)
	err := tr.Do(func() error {
		st, err := inject.Save(pid)
		if err != nil {
			return err
		}
		inject.Syscall(pid, stub.Trampoline, unix.SYS_CLOSE, 999)
		inject.SyscallTrap(pid, stub.Trampoline, unix.SYS_GETPID)
		return st.Restore(pid)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) != 4 {
		t.Fatalf("%d trace calls: %+v", len(calls), calls)
	}
	if c := calls[0]; c.Done || c.Nr != unix.SYS_CLOSE || len(c.Args) != 1 || c.Args[0] != 999 || c.TID != pid {
		t.Errorf("start of close: %+v", c)
	}
	if c := calls[1]; !c.Done || c.Err != unix.EBADF {
		t.Errorf("end of close: %+v", c)
	}
	if c := calls[3]; !c.Done || c.Err != nil || int(c.Ret) != pid {
		t.Errorf("end of getpid: %+v", c)
	}
}
