//go:build linux && amd64

package inject

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/ptrace"
	"github.com/ckptfs/ckptfs/internal/testhold"
)

const (
	syscallInfoNone  = 0
	syscallInfoEntry = 1 // PTRACE_EVENTMSG_SYSCALL_ENTRY
	syscallInfoExit  = 2 // PTRACE_EVENTMSG_SYSCALL_EXIT

	// AllSignals is the mask blocked while syscalls are injected.
	AllSignals = ^uint64(0)
)

// ErrExited is returned when the tracee died during an injected syscall.
var ErrExited = errors.New("tracee exited")

// Syscall runs system call nr with args in the stopped thread tid: it points
// rip at trampoline, the address of a `syscall` instruction (0f 05) in the
// tracee, sets rax and the argument registers (orig_rax = -1, so no restart
// fixup applies), resumes with PTRACE_SYSCALL up to the syscall-exit stop and
// returns rax. A result in [-4095,-1] is returned with its unix.Errno.
// The thread's registers are left changed: use Save and State.Restore around
// a series of calls. PTRACE_EVENT stops in between (clone, fork) are
// resumed; the new tracee's first stop is for the caller to wait for.
func Syscall(tid int, trampoline uint64, nr uintptr, args ...uint64) (uint64, error) {
	if err := startSyscall(tid, trampoline, nr, args); err != nil {
		return 0, err
	}
	return finishSyscall(tid, trampoline, nr)
}

// startSyscall sets up system call nr in tid and resumes it towards the
// call; finishSyscall waits for its exit stop. In between, other threads
// can be started: they run their calls at the same time (Batch).
func startSyscall(tid int, trampoline uint64, nr uintptr, args []uint64) error {
	if _, err := prepare(tid, trampoline, nr, args); err != nil {
		return err
	}
	if err := unix.PtraceSyscall(tid, 0); err != nil {
		return fmt.Errorf("syscall %d in %d: resume: %w", nr, tid, err)
	}
	return nil
}

// finishSyscall waits for the exit stop of the call startSyscall started
// and returns its result.
func finishSyscall(tid int, trampoline uint64, nr uintptr) (uint64, error) {
	entered := false
	for {
		done, ret, err := stepSyscall(tid, trampoline, nr, &entered)
		if done {
			return ret, err
		}
	}
}

// stepSyscall waits for the next stop of a call startSyscall started: at
// its exit it returns done and the result; at its entry (entered is then
// set) or an event stop on the way it resumes the thread and returns
// not done, so that a Batch can let every thread's call go on before it
// waits for any one's exit.
func stepSyscall(tid int, trampoline uint64, nr uintptr, entered *bool) (done bool, ret uint64, err error) {
	if err := awaitTrap(tid, nr, unix.PtraceSyscall); err != nil {
		return true, 0, err
	}
	switch op, err := syscallInfoOp(tid); {
	case err != nil:
		return true, 0, fmt.Errorf("syscall %d in %d: %w", nr, tid, err)
	case op == syscallInfoEntry:
		*entered = true
	case op == syscallInfoExit && *entered:
		var r unix.PtraceRegs
		if err := unix.PtraceGetRegs(tid, &r); err != nil {
			return true, 0, fmt.Errorf("syscall %d in %d: get regs: %w", nr, tid, err)
		}
		ret, err := result(tid, nr, &r, trampoline+2)
		return true, ret, err
	}
	if err := unix.PtraceSyscall(tid, 0); err != nil {
		return true, 0, fmt.Errorf("syscall %d in %d: resume: %w", nr, tid, err)
	}
	return false, 0, nil
}

// syscallInfoOp says whether a SIGTRAP stop is a syscall entry or exit
// stop. The kernel leaves PTRACE_EVENTMSG_SYSCALL_ENTRY (1) or _EXIT (2) in
// the event message of those stops, 0 for a signal, whatever the tracer's
// options (PTRACE_GET_SYSCALL_INFO needs PTRACE_O_TRACESYSGOOD).
func syscallInfoOp(tid int) (uint8, error) {
	msg, err := unix.PtraceGetEventMsg(tid)
	if err != nil {
		return syscallInfoNone, fmt.Errorf("get event msg: %w", err)
	}
	if msg == syscallInfoEntry || msg == syscallInfoExit {
		return uint8(msg), nil
	}
	return syscallInfoNone, nil
}

// State is the part of a thread that syscall injection changes.
type State struct {
	Regs    unix.PtraceRegs
	SigMask uint64
}

// Save records tid's registers and signal mask and blocks every signal, so
// that nothing is delivered while syscalls are injected.
func Save(tid int) (*State, error) {
	s := &State{}
	if err := unix.PtraceGetRegs(tid, &s.Regs); err != nil {
		return nil, fmt.Errorf("save regs %d: %w", tid, err)
	}
	m, err := ptrace.GetSigMask(tid)
	if err != nil {
		return nil, err
	}
	s.SigMask = m
	if err := ptrace.SetSigMask(tid, AllSignals); err != nil {
		return nil, err
	}
	return s, nil
}

// Restore puts back the registers and signal mask recorded by Save.
func (s *State) Restore(tid int) error {
	if err := unix.PtraceSetRegs(tid, &s.Regs); err != nil {
		return fmt.Errorf("restore regs %d: %w", tid, err)
	}
	return ptrace.SetSigMask(tid, s.SigMask)
}

// Restop puts back the registers and signal mask recorded by Save and
// stops the thread again in a PTRACE_EVENT_STOP (PTRACE_INTERRUPT, then
// resume): the thread is left exactly as an interrupt stop leaves it, so
// when it is released the kernel's own syscall-restart handling applies
// (-ERESTART_RESTARTBLOCK included, whose restart block only the kernel
// has). Setting the saved registers at an injected syscall's exit stop
// instead would return -ERESTART* to the program. The tracee must have
// been seized (PTRACE_SEIZE).
//
// The interrupt is asked first, so the thread has a trap pending (and the
// kernel's restart handling ahead of it) from the moment its registers
// are the saved ones; the mask is put back before the resume, as the
// interrupt's trap comes before any signal is dequeued. Both keep the
// window in which the thread is not as it was as short as possible.
func (s *State) Restop(tid int) error {
	if err := s.startRestop(tid); err != nil {
		return err
	}
	return finishRestop(tid)
}

// startRestop is Restop up to the resume; finishRestop waits for the
// interrupt stop. In between, other threads can be put back (Batch).
func (s *State) startRestop(tid int) error {
	if err := ptrace.Interrupt(tid); err != nil {
		return err
	}
	if err := unix.PtraceSetRegs(tid, &s.Regs); err != nil {
		return fmt.Errorf("restore regs %d: %w", tid, err)
	}
	if err := ptrace.SetSigMask(tid, s.SigMask); err != nil {
		return err
	}
	testhold.At("restop")
	if err := unix.PtraceCont(tid, 0); err != nil {
		return fmt.Errorf("restop %d: %w", tid, err)
	}
	return nil
}

func finishRestop(tid int) error {
	for {
		ws, err := ptrace.Wait(tid)
		if err != nil {
			return err
		}
		if ws.Exited() || ws.Signaled() {
			return fmt.Errorf("restop %d: %w", tid, ErrExited)
		}
		if ws.Stopped() && uint32(ws)>>16 == ptrace.EventStop {
			return nil
		}
		// A syscall stop on the way: go on. The interrupt's trap comes
		// before any signal is dequeued; should one come first all the
		// same, it is the program's (its registers and mask are back):
		// it is delivered, not dropped.
		sig := 0
		if ws.Stopped() && ws.StopSignal()&0x7f != unix.SIGTRAP && uint32(ws)>>16 == 0 {
			sig = int(ws.StopSignal())
		}
		if err := unix.PtraceCont(tid, sig); err != nil {
			return fmt.Errorf("restop %d: %w", tid, err)
		}
	}
}

// SyscallTrap is Syscall for a trampoline that is `syscall; int3` (the
// restore stub's and the restorer's own): the thread is resumed with
// PTRACE_CONT and runs the call and the int3, so one SIGTRAP stop replaces
// the syscall-entry and -exit stops of Syscall. The SIGTRAP is not
// delivered: the next resume or the detach suppresses it. It cannot be
// used for a call after which the int3 is gone (unmapping the trampoline)
// or that does not return (exit_group): use Syscall for those.
func SyscallTrap(tid int, trampoline uint64, nr uintptr, args ...uint64) (uint64, error) {
	r, err := prepare(tid, trampoline, nr, args)
	if err != nil {
		return 0, err
	}
	if err := nextTrap(tid, nr, unix.PtraceCont); err != nil {
		return 0, err
	}
	if err := unix.PtraceGetRegs(tid, &r); err != nil {
		return 0, fmt.Errorf("syscall %d in %d: get regs: %w", nr, tid, err)
	}
	return result(tid, nr, &r, trampoline+3)
}

// nextTrap resumes tid with resume (PTRACE_SYSCALL or PTRACE_CONT) until
// it stops with a plain SIGTRAP: a syscall stop, or the trampoline's int3.
// Event stops (clone, fork) and any other signal on the way are resumed
// without delivering them.
func nextTrap(tid int, nr uintptr, resume func(pid, sig int) error) error {
	if err := resume(tid, 0); err != nil {
		return fmt.Errorf("syscall %d in %d: resume: %w", nr, tid, err)
	}
	return awaitTrap(tid, nr, resume)
}

// awaitTrap is nextTrap after the first resume.
func awaitTrap(tid int, nr uintptr, resume func(pid, sig int) error) error {
	for {
		ws, err := ptrace.Wait(tid)
		if err != nil {
			return err
		}
		if ws.Exited() || ws.Signaled() {
			return fmt.Errorf("syscall %d in %d: %w (status %#x)", nr, tid, ErrExited, uint32(ws))
		}
		// A syscall stop is SIGTRAP|0x80 with PTRACE_O_TRACESYSGOOD.
		if ws.Stopped() && ws.StopSignal()&0x7f == unix.SIGTRAP && uint32(ws)>>16 == 0 {
			return nil
		}
		if err := resume(tid, 0); err != nil {
			return fmt.Errorf("syscall %d in %d: resume: %w", nr, tid, err)
		}
	}
}

// prepare points tid's registers at the trampoline with system call nr and
// its arguments (orig_rax = -1: no restart fix-up applies).
func prepare(tid int, trampoline uint64, nr uintptr, args []uint64) (unix.PtraceRegs, error) {
	var r unix.PtraceRegs
	if len(args) > 6 {
		return r, fmt.Errorf("syscall %d: %d args", nr, len(args))
	}
	if err := unix.PtraceGetRegs(tid, &r); err != nil {
		return r, fmt.Errorf("syscall %d in %d: get regs: %w", nr, tid, err)
	}
	var a [6]uint64
	copy(a[:], args)
	trace(Traced{TID: tid, Nr: nr, Args: args}) // trace.go
	r.Rip, r.Rax, r.Orig_rax = trampoline, uint64(nr), ^uint64(0)
	r.Rdi, r.Rsi, r.Rdx, r.R10, r.R8, r.R9 = a[0], a[1], a[2], a[3], a[4], a[5]
	if err := unix.PtraceSetRegs(tid, &r); err != nil {
		return r, fmt.Errorf("syscall %d in %d: set regs: %w", nr, tid, err)
	}
	return r, nil
}

// result returns rax of a finished injected call, as an errno for
// -4095..-1, after checking the thread stopped where it should (rip).
func result(tid int, nr uintptr, r *unix.PtraceRegs, rip uint64) (uint64, error) {
	if r.Rip != rip {
		err := fmt.Errorf("syscall %d in %d: stopped at %#x, want %#x", nr, tid, r.Rip, rip)
		trace(Traced{TID: tid, Nr: nr, Done: true, Err: err})
		return 0, err
	}
	if v := int64(r.Rax); v < 0 && v >= -4095 {
		trace(Traced{TID: tid, Nr: nr, Done: true, Ret: r.Rax, Err: unix.Errno(-v)})
		return r.Rax, unix.Errno(-v)
	}
	trace(Traced{TID: tid, Nr: nr, Done: true, Ret: r.Rax})
	return r.Rax, nil
}
