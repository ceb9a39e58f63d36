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
// A disabled stack needs no call (a new thread has none).
func SetAltStack(tid int, trampoline, scratch uint64, a AltStack) error {
	if a.Disabled() {
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
