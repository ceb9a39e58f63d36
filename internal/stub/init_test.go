package stub

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// startInit starts the stub, forks it (the child is prepared by child) and
// turns the parent into the init of initCode with the child as its root.
// It returns the init's and the child's pid; wait for the init with wait.
func startInit(t *testing.T, child func(pid int, r *unix.PtraceRegs)) (initPid, root int, wait func() int) {
	t.Helper()
	runtime.LockOSThread() // every ptrace call from this thread; the test ends it
	cmd, cleanup, err := Command(nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	err = cmd.Start()
	cleanup()
	if err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ptrace.Seize(pid, unix.PTRACE_O_EXITKILL|unix.PTRACE_O_TRACEFORK))
	must(ptrace.Interrupt(pid))
	_, err = ptrace.Wait(pid)
	must(err)
	must(ptrace.SetSigMask(pid, inject.AllSignals))
	c, err := inject.SyscallTrap(pid, Trampoline, unix.SYS_FORK)
	must(err)
	root = int(c)
	t.Cleanup(func() { unix.Kill(root, unix.SIGKILL) })
	_, err = ptrace.Wait(root)
	must(err)
	var r unix.PtraceRegs
	must(unix.PtraceGetRegs(root, &r))
	child(root, &r)
	must(unix.PtraceSetRegs(root, &r))
	must(ptrace.SetSigMask(root, 0))
	must(ptrace.Detach(root, 0))
	must(unix.PtraceGetRegs(pid, &r))
	r.Rip, r.R12, r.Orig_rax = InitEntry, uint64(root), ^uint64(0)
	must(unix.PtraceSetRegs(pid, &r))
	must(ptrace.Detach(pid, 0))
	return pid, root, func() int {
		cmd.Wait()
		return cmd.ProcessState.ExitCode()
	}
}

// TestInitForwardsSignal: a SIGTERM to the init reaches the root, which
// dies of it; the init exits 128+15.
func TestInitForwardsSignal(t *testing.T) {
	initPid, _, wait := startInit(t, func(_ int, r *unix.PtraceRegs) {
		r.Rip, r.Orig_rax = Entry, ^uint64(0) // the pause loop
	})
	if err := unix.Kill(initPid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := wait(); code != 128+int(unix.SIGTERM) {
		t.Fatalf("init exit code %d, want %d", code, 128+int(unix.SIGTERM))
	}
}

// TestInitExitCode: the root's exit code is the init's.
func TestInitExitCode(t *testing.T) {
	_, _, wait := startInit(t, func(_ int, r *unix.PtraceRegs) {
		r.Rip, r.Rax, r.Rdi, r.Orig_rax = Trampoline, unix.SYS_EXIT_GROUP, 7, ^uint64(0)
	})
	if code := wait(); code != 7 {
		t.Fatalf("init exit code %d, want 7", code)
	}
}
