//go:build linux && amd64

// Package ptrace wraps the ptrace requests ckptfs needs beyond what
// golang.org/x/sys/unix wraps (its constants are used, its functions lack
// these requests): seize/interrupt, register sets, signal masks, pending
// siginfo and rseq configuration. It knows nothing of the checkpoint model. All calls for one tracee must come
// from the OS thread that seized it (runtime.LockOSThread).
package ptrace

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// EventStop is the PTRACE_EVENT_STOP value in a wait status' high byte.
const EventStop = unix.PTRACE_EVENT_STOP

// SiginfoSize is the size of a raw siginfo_t.
const SiginfoSize = 128

// XStateMax bounds the XSAVE area we ask for (AMX needs ~11 KiB).
const XStateMax = 16384

func ptrace(req, pid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// Seize attaches to tid without stopping it or sending a signal.
func Seize(tid int, options int) error {
	if err := ptrace(unix.PTRACE_SEIZE, tid, 0, uintptr(options)); err != nil {
		return fmt.Errorf("ptrace seize %d: %w", tid, err)
	}
	return nil
}

// Interrupt asks a seized tid to stop (PTRACE_INTERRUPT).
func Interrupt(tid int) error {
	if err := ptrace(unix.PTRACE_INTERRUPT, tid, 0, 0); err != nil {
		return fmt.Errorf("ptrace interrupt %d: %w", tid, err)
	}
	return nil
}

// Detach releases tid, delivering sig (0 for none).
func Detach(tid int, sig int) error {
	if err := ptrace(unix.PTRACE_DETACH, tid, 0, uintptr(sig)); err != nil {
		return fmt.Errorf("ptrace detach %d: %w", tid, err)
	}
	return nil
}

// Wait waits for a state change of tid (any child kind, __WALL).
func Wait(tid int) (unix.WaitStatus, error) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(tid, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, fmt.Errorf("wait %d: %w", tid, err)
		}
		return ws, nil
	}
}

// GetRegs reads the general purpose registers.
func GetRegs(tid int) (unix.PtraceRegs, error) {
	var r unix.PtraceRegs
	if err := unix.PtraceGetRegs(tid, &r); err != nil {
		return r, fmt.Errorf("get regs %d: %w", tid, err)
	}
	return r, nil
}

// SetRegs writes the general purpose registers.
func SetRegs(tid int, r unix.PtraceRegs) error {
	if err := unix.PtraceSetRegs(tid, &r); err != nil {
		return fmt.Errorf("set regs %d: %w", tid, err)
	}
	return nil
}

// GetXState reads the XSAVE area (NT_X86_XSTATE).
func GetXState(tid int) ([]byte, error) {
	buf := make([]byte, XStateMax)
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := ptrace(unix.PTRACE_GETREGSET, tid, unix.NT_X86_XSTATE, uintptr(unsafe.Pointer(&iov))); err != nil {
		return nil, fmt.Errorf("get xstate %d: %w", tid, err)
	}
	return buf[:iov.Len], nil
}

// SetXState writes an XSAVE area read by GetXState. The kernel takes
// only an area of this CPU's size: one recorded on a CPU of another size
// is fitted to it first (FitXState).
func SetXState(tid int, xs []byte) error {
	if len(xs) == 0 {
		return nil
	}
	cur, err := GetXState(tid)
	if err != nil {
		return err
	}
	buf, err := FitXState(xs, cur)
	if err != nil {
		return fmt.Errorf("set xstate %d: %w", tid, err)
	}
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := ptrace(unix.PTRACE_SETREGSET, tid, unix.NT_X86_XSTATE, uintptr(unsafe.Pointer(&iov))); err != nil {
		return fmt.Errorf("set xstate %d: %w", tid, err)
	}
	return nil
}

// GetSigMask reads the blocked-signal mask.
func GetSigMask(tid int) (uint64, error) {
	var m uint64
	if err := ptrace(unix.PTRACE_GETSIGMASK, tid, 8, uintptr(unsafe.Pointer(&m))); err != nil {
		return 0, fmt.Errorf("get sigmask %d: %w", tid, err)
	}
	return m, nil
}

// SetSigMask writes the blocked-signal mask.
func SetSigMask(tid int, m uint64) error {
	if err := ptrace(unix.PTRACE_SETSIGMASK, tid, 8, uintptr(unsafe.Pointer(&m))); err != nil {
		return fmt.Errorf("set sigmask %d: %w", tid, err)
	}
	return nil
}

type peekSiginfoArgs struct {
	off   uint64
	flags uint32
	nr    int32
}

// PeekSiginfo returns the queued signals of tid without dequeuing them,
// raw siginfo_t each; shared selects the process-wide queue instead of the
// thread's own.
func PeekSiginfo[S ~[SiginfoSize]byte](tid int, shared bool) ([]S, error) {
	var out []S
	buf := make([]S, 32)
	args := peekSiginfoArgs{nr: int32(len(buf))}
	if shared {
		args.flags = unix.PTRACE_PEEKSIGINFO_SHARED
	}
	for {
		r1, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_PEEKSIGINFO, uintptr(tid),
			uintptr(unsafe.Pointer(&args)), uintptr(unsafe.Pointer(&buf[0])), 0, 0)
		if e != 0 {
			return nil, fmt.Errorf("peek siginfo %d: %w", tid, e)
		}
		n := int(r1)
		out = append(out, buf[:n]...)
		if n < len(buf) {
			return out, nil
		}
		args.off += uint64(n)
	}
}

type rseqConfig struct {
	ptr   uint64
	size  uint32
	sig   uint32
	flags uint32
	_     uint32
}

// Rseq is a thread's rseq registration.
type Rseq struct {
	Addr  uint64
	Len   uint32
	Sig   uint32
	Flags uint32
}

// GetRseq returns the thread's rseq registration, or nil if it has none.
func GetRseq(tid int) (*Rseq, error) {
	var c rseqConfig
	if err := ptrace(unix.PTRACE_GET_RSEQ_CONFIGURATION, tid, unsafe.Sizeof(c), uintptr(unsafe.Pointer(&c))); err != nil {
		return nil, fmt.Errorf("get rseq config %d: %w", tid, err)
	}
	if c.ptr == 0 {
		return nil, nil
	}
	return &Rseq{Addr: c.ptr, Len: c.size, Sig: c.sig, Flags: c.flags}, nil
}

// IsEventStop reports a PTRACE_EVENT_STOP (interrupt or group-stop under
// PTRACE_SEIZE), whatever the stop signal.
func IsEventStop(ws unix.WaitStatus) bool {
	return ws.Stopped() && uint32(ws)>>16 == EventStop
}

// The standard-format XSAVE area: the legacy region (x87, SSE), the
// header, then the components at offsets CPUID gives per CPU; only the
// AVX upper halves (component 2) have the same offset on every CPU.
const (
	xsaveHeader   = 512 // XSTATE_BV, then XCOMP_BV
	xsaveFixedEnd = 832 // end of component 2 (AVX) at 576
	xfeatureFixed = 1<<0 | 1<<1 | 1<<2
)

// FitXState returns the recorded XSAVE area rec in the size of this CPU's
// area cur (what GETREGSET gave). Of the same size, rec as it is. Of
// another size, rec is taken when it holds only the components every CPU
// lays out alike (x87, SSE, AVX), over cur with every other component in
// its initial state; a recorded area that holds others (AVX-512, PKRU...)
// cannot be placed without the recording CPU's layout and is refused.
func FitXState(rec, cur []byte) ([]byte, error) {
	if len(rec) == len(cur) {
		return append([]byte(nil), rec...), nil
	}
	if len(rec) < xsaveFixedEnd || len(cur) < xsaveFixedEnd {
		return nil, fmt.Errorf("xsave area of %d bytes recorded, %d here: too short for the standard format", len(rec), len(cur))
	}
	bv := binary.LittleEndian.Uint64(rec[xsaveHeader:])
	if other := bv &^ xfeatureFixed; other != 0 {
		return nil, fmt.Errorf("xsave area of %d bytes recorded with state components %#x, %d bytes here: recorded on a CPU with another XSAVE layout", len(rec), other, len(cur))
	}
	out := append([]byte(nil), cur...)
	copy(out, rec[:xsaveFixedEnd])
	binary.LittleEndian.PutUint64(out[xsaveHeader:], bv)
	binary.LittleEndian.PutUint64(out[xsaveHeader+8:], 0) // standard format
	return out, nil
}
