//go:build linux && amd64

package inject_test

import (
	"bytes"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/ptrace"
	"github.com/ckptfs/ckptfs/internal/stub"
)

// startStub starts the stub on tr's thread, seizes and stops it.
func startStub(t testing.TB, tr *inject.Tracer) int {
	t.Helper()
	var cmd *exec.Cmd
	err := tr.Do(func() error {
		c, cleanup, err := stub.Command(nil)
		if err != nil {
			return err
		}
		c.Stdin, c.Stdout, c.Stderr = nil, nil, nil
		err = c.Start()
		cleanup()
		if err != nil {
			return err
		}
		cmd = c
		pid := c.Process.Pid
		if err := ptrace.Seize(pid, unix.PTRACE_O_EXITKILL|unix.PTRACE_O_TRACESYSGOOD); err != nil {
			return err
		}
		if err := ptrace.Interrupt(pid); err != nil {
			return err
		}
		_, err = ptrace.Wait(pid)
		return err
	})
	if err != nil {
		if cmd != nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		tr.Do(func() error { cmd.Wait(); return nil })
	})
	return cmd.Process.Pid
}

func TestSyscallAndMemory(t *testing.T) {
	tr := inject.NewTracer()
	t.Cleanup(tr.Close)
	pid := startStub(t, tr)
	err := tr.Do(func() error {
		st, err := inject.Save(pid)
		if err != nil {
			return err
		}
		got, err := inject.Syscall(pid, stub.Trampoline, unix.SYS_GETPID)
		if err != nil {
			return err
		}
		if int(got) != pid {
			t.Errorf("getpid = %d, want %d", got, pid)
		}
		// An error comes back as errno.
		if _, err := inject.Syscall(pid, stub.Trampoline, unix.SYS_CLOSE, 999); err != unix.EBADF {
			t.Errorf("close(999) err = %v, want EBADF", err)
		}
		addr, err := inject.Syscall(pid, stub.Trampoline, unix.SYS_MMAP, 0, 8192,
			unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
		if err != nil {
			return err
		}
		msg := bytes.Repeat([]byte("ckptfs!"), 1000)
		if err := inject.WriteMem(pid, addr, msg); err != nil {
			return err
		}
		back := make([]byte, len(msg))
		if err := inject.ReadMem(pid, addr, back); err != nil {
			return err
		}
		if !bytes.Equal(back, msg) {
			t.Error("memory read back differs")
		}
		// Read-only now: process_vm_writev fails, /proc/pid/mem works.
		if _, err := inject.Syscall(pid, stub.Trampoline, unix.SYS_MPROTECT, addr, 8192, unix.PROT_READ); err != nil {
			return err
		}
		if err := inject.WriteMem(pid, addr, []byte("x")); err == nil {
			t.Error("process_vm_writev to a read-only page succeeded")
		}
		if err := inject.PokeMem(pid, addr, []byte("poked")); err != nil {
			return err
		}
		if err := inject.ReadMem(pid, addr, back[:5]); err != nil || string(back[:5]) != "poked" {
			t.Errorf("poke: %q %v", back[:5], err)
		}
		// At the stub's `syscall; int3`: one stop per call, the same results.
		got, err = inject.SyscallTrap(pid, stub.Trampoline, unix.SYS_GETPID)
		if err != nil || int(got) != pid {
			t.Errorf("getpid at syscall; int3 = %d, %v", got, err)
		}
		if _, err := inject.SyscallTrap(pid, stub.Trampoline, unix.SYS_CLOSE, 999); err != unix.EBADF {
			t.Errorf("close(999) at syscall; int3: err = %v, want EBADF", err)
		}
		// The vdso's syscall instruction works as a trampoline too.
		vs, err := inject.FindSyscallInsn(pid)
		if err != nil {
			return err
		}
		got, err = inject.Syscall(pid, vs, unix.SYS_GETTID)
		if err != nil || int(got) != pid {
			t.Errorf("gettid via vdso = %d, %v", got, err)
		}
		if err := st.Restore(pid); err != nil {
			return err
		}
		if err := ptrace.Detach(pid, 0); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Detached and restored: the stub is back in its pause loop.
	var ws unix.WaitStatus
	if wp, _ := unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil); wp != 0 {
		t.Fatalf("stub died after detach: %#x", uint32(ws))
	}
}

// TestThreadState sets and reads back the per-thread state helpers in the
// stub (its stack serves as scratch).
func TestThreadState(t *testing.T) {
	tr := inject.NewTracer()
	t.Cleanup(tr.Close)
	pid := startStub(t, tr)
	err := tr.Do(func() error {
		regs, err := ptrace.GetRegs(pid)
		if err != nil {
			return err
		}
		scratch := (regs.Rsp - 4096) &^ 15
		tramp := uint64(stub.Trampoline)
		a, err := inject.GetAltStack(pid, tramp, scratch)
		if err != nil {
			return err
		}
		if !a.Disabled() {
			t.Errorf("stub has an altstack: %+v", a)
		}
		want := inject.AltStack{SP: scratch - 65536, Size: 32768}
		if err := inject.SetAltStack(pid, tramp, scratch, want); err != nil {
			return err
		}
		if got, err := inject.GetAltStack(pid, tramp, scratch); err != nil || got != want {
			t.Errorf("altstack %+v %v, want %+v", got, err, want)
		}
		if err := inject.SetTIDAddress(pid, tramp, scratch+512); err != nil {
			return err
		}
		if got, err := inject.GetTIDAddress(pid, tramp, scratch); err != nil || got != scratch+512 {
			t.Errorf("tid address %#x %v, want %#x", got, err, scratch+512)
		}
		if err := inject.SetRobustList(pid, tramp, scratch+1024, 24); err != nil {
			return err
		}
		if h, l, err := inject.GetRobustList(pid); err != nil || h != scratch+1024 || l != 24 {
			t.Errorf("robust list %#x %d %v", h, l, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
