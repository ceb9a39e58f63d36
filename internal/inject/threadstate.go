//go:build linux && amd64

package inject

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// Per-thread kernel state that only the thread itself can read, by
// injected syscalls. scratch is tracee memory the call may overwrite (at
// least 32 bytes; the caller saves and restores it if it matters).

// stack_t ss_flags bits.
const (
	ssOnStack = 1
	ssDisable = 2
)

// AltStack is a thread's sigaltstack (stack_t).
type AltStack struct {
	SP    uint64
	Flags int32
	Size  uint64
}

// Disabled reports SS_DISABLE (no alternate stack).
func (a AltStack) Disabled() bool { return a.Flags&ssDisable != 0 }

// GetAltStack reads thread tid's sigaltstack: sigaltstack(NULL, scratch).
func GetAltStack(tid int, trampoline, scratch uint64) (AltStack, error) {
	if _, err := Syscall(tid, trampoline, unix.SYS_SIGALTSTACK, 0, scratch); err != nil {
		return AltStack{}, fmt.Errorf("sigaltstack of %d: %w", tid, err)
	}
	b := make([]byte, 24)
	if err := ReadMem(tid, scratch, b); err != nil {
		return AltStack{}, err
	}
	le := binary.LittleEndian
	return AltStack{SP: le.Uint64(b), Flags: int32(le.Uint32(b[8:])), Size: le.Uint64(b[16:])}, nil
}

// SetAltStack sets thread tid's sigaltstack: sigaltstack(scratch, NULL).
// A disabled or zero stack needs no call (a new thread has none).
func SetAltStack(tid int, trampoline, scratch uint64, a AltStack) error {
	if a.Disabled() || a.SP == 0 && a.Size == 0 {
		return nil
	}
	b := make([]byte, 24)
	le := binary.LittleEndian
	le.PutUint64(b, a.SP)
	le.PutUint32(b[8:], uint32(a.Flags&^ssOnStack))
	le.PutUint64(b[16:], a.Size)
	if err := WriteMem(tid, scratch, b); err != nil {
		return err
	}
	if _, err := Syscall(tid, trampoline, unix.SYS_SIGALTSTACK, scratch, 0); err != nil {
		return fmt.Errorf("sigaltstack of %d: %w", tid, err)
	}
	return nil
}

// GetTIDAddress reads thread tid's clear_child_tid address (the one
// set_tid_address or CLONE_CHILD_CLEARTID set): prctl(PR_GET_TID_ADDRESS).
func GetTIDAddress(tid int, trampoline, scratch uint64) (uint64, error) {
	if _, err := Syscall(tid, trampoline, unix.SYS_PRCTL, unix.PR_GET_TID_ADDRESS, scratch); err != nil {
		return 0, fmt.Errorf("tid address of %d: %w", tid, err)
	}
	b := make([]byte, 8)
	if err := ReadMem(tid, scratch, b); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// SetTIDAddress sets thread tid's clear_child_tid address.
func SetTIDAddress(tid int, trampoline, addr uint64) error {
	if _, err := Syscall(tid, trampoline, unix.SYS_SET_TID_ADDRESS, addr); err != nil {
		return fmt.Errorf("set_tid_address of %d: %w", tid, err)
	}
	return nil
}

// GetRobustList reads thread tid's robust futex list head and length;
// no injection is needed (get_robust_list works on a traced thread).
func GetRobustList(tid int) (head, length uint64, err error) {
	var h, l uint64
	_, _, e := unix.Syscall(unix.SYS_GET_ROBUST_LIST, uintptr(tid), uintptrOf(&h), uintptrOf(&l))
	if e != 0 {
		return 0, 0, fmt.Errorf("get_robust_list %d: %w", tid, e)
	}
	return h, l, nil
}

// SetRobustList sets thread tid's robust futex list (injected).
func SetRobustList(tid int, trampoline, head, length uint64) error {
	if head == 0 {
		return nil
	}
	if _, err := Syscall(tid, trampoline, unix.SYS_SET_ROBUST_LIST, head, length); err != nil {
		return fmt.Errorf("set_robust_list of %d: %w", tid, err)
	}
	return nil
}

// Extras is the per-thread state a restore needs beyond registers and
// masks: the sigaltstack (Go sets one per thread; without it a signal on a
// running goroutine hangs the runtime), the clear_child_tid address
// (pthread_join waits on it) and the robust futex list.
type Extras struct {
	AltStack   AltStack
	ClearTID   uint64
	RobustHead uint64
	RobustLen  uint64
	Prctls     Prctls // security.go: read with the others, not written by WriteExtras
}

// ReadExtras reads the Extras of the stopped thread tid (seized, in an
// interrupt stop), tramp being a syscall instruction of its process
// (FindSyscallInsn): a Batch of one ExtrasJob. leader: tid is the main
// thread, which also reads the process' dumpable flag (Prctls).
func ReadExtras(tid int, tramp uint64, leader bool) (Extras, error) {
	var x Extras
	j, err := ExtrasJob(tid, tramp, leader, &x, nil)
	if err != nil {
		return x, err
	}
	return x, Batch([]*Job{j})
}

// ExtrasJob returns the Job that reads the Extras of thread tid into x,
// with syscalls injected into the thread itself (the robust list needs
// none: it is read now); more, if not nil, adds calls of the caller's
// to the same job (one save and one restop for all of a thread's calls).
func ExtrasJob(tid int, tramp uint64, leader bool, x *Extras, more func(scratch uint64) []Call) (*Job, error) {
	var err error
	if x.RobustHead, x.RobustLen, err = GetRobustList(tid); err != nil {
		return nil, err
	}
	return &Job{TID: tid, Tramp: tramp, Calls: func(scratch uint64) []Call {
		le := binary.LittleEndian
		calls := []Call{
			{Name: "sigaltstack", Nr: unix.SYS_SIGALTSTACK, Args: []uint64{0, scratch}, Hold: true, Done: func(uint64) error {
				b := make([]byte, 24)
				if err := ReadMem(tid, scratch, b); err != nil {
					return err
				}
				x.AltStack = AltStack{SP: le.Uint64(b), Flags: int32(le.Uint32(b[8:])), Size: le.Uint64(b[16:])}
				return nil
			}},
			{Name: "tid address", Nr: unix.SYS_PRCTL, Args: []uint64{unix.PR_GET_TID_ADDRESS, scratch}, Done: func(uint64) error {
				b := make([]byte, 8)
				if err := ReadMem(tid, scratch, b); err != nil {
					return err
				}
				x.ClearTID = le.Uint64(b)
				return nil
			}},
		}
		calls = append(calls, prctlCalls(tid, scratch, leader, &x.Prctls)...) // security.go
		if more != nil {
			calls = append(calls, more(scratch)...)
		}
		return calls
	}}, nil
}

// WriteExtras sets the Extras of thread tid, at a `syscall` trampoline
// with scratch memory (at least 32 bytes) in its process.
func WriteExtras(tid int, trampoline, scratch uint64, x Extras) error {
	if err := SetAltStack(tid, trampoline, scratch, x.AltStack); err != nil {
		return err
	}
	if x.ClearTID != 0 {
		if err := SetTIDAddress(tid, trampoline, x.ClearTID); err != nil {
			return err
		}
	}
	return SetRobustList(tid, trampoline, x.RobustHead, x.RobustLen)
}
