//go:build linux && amd64

// Package sysseq runs a series of system calls inside a stopped ptrace
// tracee in one stop. Injected one at a time, every call costs the tracer
// a resume, a wait and two context switches: a restored process needs
// about ninety of them. Here the calls are written, as a table, into the
// tracee's memory beside a small runner (Code, 78 bytes of x86-64) that
// makes them one after another and stops at an int3 when the table is
// done or a call failed; the tracer then reads every result back at once.
//
// A call may take, as one argument or as a 32-bit value in memory, the
// result of an earlier call of the same sequence (an fd that pidfd_getfd
// or userfaultfd returned), so a series that depends on fds it creates
// needs no stop in between. Calls that create tasks (clone, fork), end the
// thread or unmap the runner do not belong in a sequence.
package sysseq

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// Code is the runner, position independent. Started with rbx = the first
// entry of the table and r12 = the number of entries, per entry it copies
// the 32-bit value at src to dst (src not 0), makes the call, stores rax
// over the entry's number, and goes on unless the result is an errno and
// the entry's goOn flag is clear; then it executes int3 with r12 = the
// entries left (0: all done; else rbx is the one that failed).
//
//	run:  test r12, r12        ; jz done
//	      mov rax, [rbx+64]    ; test rax, rax ; jz 1f
//	      mov eax, [rax]       ; mov rdx, [rbx+72] ; mov [rdx], eax
//	1:    mov rax, [rbx]       ; rdi rsi rdx r10 r8 r9 = [rbx+8..48]
//	      syscall
//	      mov [rbx], rax
//	      test byte [rbx+56], 1 ; jnz 2f
//	      cmp rax, -4095       ; jae done
//	2:    add rbx, 80          ; dec r12 ; jmp run
//	done: int3
var Code = []byte{
	0x4d, 0x85, 0xe4, //             test r12, r12
	0x74, 0x48, //                   je done
	0x48, 0x8b, 0x43, 0x40, //       mov rax, [rbx+0x40]
	0x48, 0x85, 0xc0, //             test rax, rax
	0x74, 0x08, //                   je 1f
	0x8b, 0x00, //                   mov eax, [rax]
	0x48, 0x8b, 0x53, 0x48, //       mov rdx, [rbx+0x48]
	0x89, 0x02, //                   mov [rdx], eax
	0x48, 0x8b, 0x03, //         1:  mov rax, [rbx]
	0x48, 0x8b, 0x7b, 0x08, //       mov rdi, [rbx+0x8]
	0x48, 0x8b, 0x73, 0x10, //       mov rsi, [rbx+0x10]
	0x48, 0x8b, 0x53, 0x18, //       mov rdx, [rbx+0x18]
	0x4c, 0x8b, 0x53, 0x20, //       mov r10, [rbx+0x20]
	0x4c, 0x8b, 0x43, 0x28, //       mov r8, [rbx+0x28]
	0x4c, 0x8b, 0x4b, 0x30, //       mov r9, [rbx+0x30]
	0x0f, 0x05, //                   syscall
	0x48, 0x89, 0x03, //             mov [rbx], rax
	0xf6, 0x43, 0x38, 0x01, //       test byte [rbx+0x38], 1
	0x75, 0x08, //                   jne 2f
	0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, // cmp rax, -4095
	0x73, 0x09, //                   jae done
	0x48, 0x83, 0xc3, 0x50, //   2:  add rbx, 0x50
	0x49, 0xff, 0xcc, //             dec r12
	0xeb, 0xb3, //                   jmp run
	0xcc, //                   done: int3
}

// stopAt is where a finished run stops: just past the int3.
const stopAt = 0x4e

// EntrySize is the size of one call in the table: number (then result),
// six arguments, flags, copy source and destination.
const EntrySize = 80

const flagGoOn = 1

var le = binary.LittleEndian

// Ret names the result of a call added to a Seq (0: none).
type Ret int

// Call is one system call of a sequence.
type Call struct {
	Nr   uintptr
	Args [6]uint64
	// GoOn: an error of this call does not stop the sequence (Check
	// still sees it).
	GoOn bool
	// From, if set, is an earlier call whose result (its low 32 bits:
	// an fd) this call takes: as argument Arg, or, if To is set, as the
	// 32-bit value at To (a field of a struct the call reads).
	From Ret
	Arg  int
	To   uint64
	// Check, if set, sees the result once the call ran (err is its
	// errno) and says whether the sequence failed. Without it an error
	// fails the sequence, unless GoOn.
	Check func(ret uint64, err error) error
}

// Seq is a sequence of calls for one thread, built here and run in it by
// Flush. Its table and data go into size bytes at area in the tracee
// (the table from the start, the data from the end), which nothing else
// may use while the sequence runs; Code must be at code. A Seq is used
// from the thread that traces tid.
type Seq struct {
	tid        int
	code, area uint64
	size       int

	calls    []Call
	pieces   []piece // the data area, from its end down
	dataLen  int     // bytes of it used
	reserved bool    // a Put made room for the next Add
	first    Ret     // the Ret of calls[0]
	vals     []uint64
	errs     []error
}

// New returns an empty sequence for thread tid.
func New(tid int, code, area uint64, size int) *Seq {
	return &Seq{tid: tid, code: code, area: area, size: size, first: 1}
}

// Pending says how many calls wait for Flush.
func (s *Seq) Pending() int { return len(s.calls) }

func (s *Seq) fits(entries, data int) bool {
	// 8 bytes an entry for a constant it may copy (Flush)
	return (len(s.calls)+entries)*(EntrySize+8)+s.dataLen+data <= s.size
}

// piece is a buffer of the data area, off bytes below its end.
type piece struct {
	b   []byte
	off int
}

// Put places bufs in the data area, each 8-byte aligned, and returns
// their addresses in the tracee; the call that reads them must be the
// next Add (Put runs the pending calls first when there is no room: put
// everything one call needs in one Put). Their bytes are read when the
// sequence runs: the caller may fill them in until then. Data too large
// for the area is an error: make that call on its own.
func (s *Seq) Put(bufs ...[]byte) ([]uint64, error) {
	n := 0
	for _, b := range bufs {
		n += (len(b) + 7) &^ 7
	}
	if n+EntrySize > s.size {
		return nil, fmt.Errorf("%d bytes of data do not fit a sequence of %d bytes", n, s.size)
	}
	if !s.fits(1, n) {
		if err := s.Flush(); err != nil {
			return nil, err
		}
	}
	addrs := make([]uint64, len(bufs))
	for i, b := range bufs {
		s.dataLen += (len(b) + 7) &^ 7
		s.pieces = append(s.pieces, piece{b: b, off: s.dataLen})
		addrs[i] = s.area + uint64(s.size-s.dataLen)
	}
	s.reserved = true
	return addrs, nil
}

// Add appends c and returns the name of its result. A full table is run
// first (Flush), unless a Put made room for c; an error of that run is
// kept and given by the next Flush (nothing more runs).
func (s *Seq) Add(c Call) Ret {
	if !s.reserved && !s.fits(1, 0) {
		if err := s.Flush(); err != nil {
			s.errs = append(s.errs, err)
		}
	}
	s.reserved = false
	s.calls = append(s.calls, c)
	return s.first + Ret(len(s.calls)-1)
}

// Sys appends a call with plain arguments.
func (s *Seq) Sys(nr uintptr, args ...uint64) Ret {
	c := Call{Nr: nr}
	copy(c.Args[:], args)
	return s.Add(c)
}

// Value returns the result of the call r, running the pending calls
// first if r is one of them.
func (s *Seq) Value(r Ret) (uint64, error) {
	if r <= 0 || int(r) > len(s.vals)+len(s.calls) {
		return 0, fmt.Errorf("sysseq: no call %d", r)
	}
	if r >= s.first {
		if err := s.Flush(); err != nil {
			return 0, err
		}
	}
	return s.vals[r-1], nil
}

// Flush runs the pending calls in the thread and checks their results.
// The first error (an errno, or what a Check said) is returned; after it
// nothing more runs, and the calls not run are dropped.
func (s *Seq) Flush() error {
	calls := s.calls
	data := make([]byte, s.dataLen)
	for _, p := range s.pieces {
		copy(data[s.dataLen-p.off:], p.b)
	}
	s.calls, s.pieces, s.dataLen, s.reserved = nil, nil, 0, false
	base := s.first
	s.first += Ret(len(calls))
	// Whatever happens, every call gets a value (0 if it did not run).
	end := int(base) - 1 + len(calls)
	defer func() {
		for len(s.vals) < end {
			s.vals = append(s.vals, 0)
		}
	}()
	if err := errors.Join(s.errs...); err != nil {
		s.errs = nil
		return err
	}
	if len(calls) == 0 {
		return nil
	}
	table := make([]byte, len(calls)*EntrySize)
	var consts []byte // values of From calls that ran in an earlier Flush
	for i, c := range calls {
		e := table[i*EntrySize:]
		le.PutUint64(e, uint64(c.Nr))
		for j, a := range c.Args {
			le.PutUint64(e[8+8*j:], a)
		}
		if c.GoOn {
			e[56] = flagGoOn
		}
		if c.From == 0 {
			continue
		}
		if c.From >= base+Ret(i) || c.From <= 0 {
			return fmt.Errorf("sysseq: call %d takes the result of call %d, not an earlier one", base+Ret(i), c.From)
		}
		var src uint64
		if c.From >= base {
			src = s.area + uint64(c.From-base)*EntrySize // its result field
		} else {
			// Known already: from a constant after the table.
			src = s.area + uint64(len(table)+len(consts))
			consts = le.AppendUint64(consts, s.vals[c.From-1])
		}
		dst := c.To
		if dst == 0 {
			if c.Arg < 0 || c.Arg > 5 {
				return fmt.Errorf("sysseq: argument %d", c.Arg)
			}
			dst = s.area + uint64(i*EntrySize+8+8*c.Arg)
		}
		le.PutUint64(e[64:], src)
		le.PutUint64(e[72:], dst)
	}
	table = append(table, consts...)
	if len(table)+len(data) > s.size {
		return fmt.Errorf("sysseq: %d calls and %d bytes of data do not fit %d bytes", len(calls), len(data), s.size)
	}
	if err := s.write(table, data); err != nil {
		return err
	}
	for start := 0; start < len(calls); {
		ran, err := s.run(start, len(calls)-start)
		if err != nil {
			return err
		}
		res := make([]byte, ran*EntrySize)
		if err := readMem(s.tid, s.area+uint64(start*EntrySize), res); err != nil {
			return err
		}
		for i := range ran {
			c := calls[start+i]
			ret := le.Uint64(res[i*EntrySize:])
			s.vals = append(s.vals, ret)
			var errno error
			if v := int64(ret); v < 0 && v >= -4095 {
				errno = unix.Errno(-v)
			}
			if inject.Tracing() {
				args := c.Args
				if c.From != 0 && c.To == 0 {
					args[c.Arg] = uint64(uint32(s.vals[c.From-1]))
				}
				inject.Trace(inject.Traced{TID: s.tid, Nr: c.Nr, Args: args[:]})
				inject.Trace(inject.Traced{TID: s.tid, Nr: c.Nr, Done: true, Ret: ret, Err: errno})
			}
			var err error
			switch {
			case c.Check != nil:
				err = c.Check(ret, errno)
			case errno != nil && !c.GoOn:
				err = fmt.Errorf("syscall %d: %w", c.Nr, errno)
			}
			if err != nil {
				return err
			}
		}
		start += ran
	}
	return nil
}

// write puts the table at area and the data at the area's end.
func (s *Seq) write(table, data []byte) error {
	local := []unix.Iovec{{Base: &table[0]}}
	local[0].SetLen(len(table))
	remote := []unix.RemoteIovec{{Base: uintptr(s.area), Len: len(table)}}
	if len(data) > 0 {
		local = append(local, unix.Iovec{Base: &data[0]})
		local[1].SetLen(len(data))
		remote = append(remote, unix.RemoteIovec{Base: uintptr(s.area) + uintptr(s.size-len(data)), Len: len(data)})
	}
	want := len(table) + len(data)
	n, err := unix.ProcessVMWritev(s.tid, local, remote, 0)
	if err != nil {
		return fmt.Errorf("write %d calls in %d: %w", len(table)/EntrySize, s.tid, err)
	}
	if n != want {
		return fmt.Errorf("write %d calls in %d: short write (%d of %d bytes)", len(table)/EntrySize, s.tid, n, want)
	}
	return nil
}

// run runs n entries of the table from entry start and returns how many
// ran (the last of them failed if fewer than n).
func (s *Seq) run(start, n int) (int, error) {
	var r unix.PtraceRegs
	if err := unix.PtraceGetRegs(s.tid, &r); err != nil {
		return 0, fmt.Errorf("sequence in %d: get regs: %w", s.tid, err)
	}
	r.Rip, r.Orig_rax = s.code, ^uint64(0)
	r.Rbx, r.R12 = s.area+uint64(start*EntrySize), uint64(n)
	if err := unix.PtraceSetRegs(s.tid, &r); err != nil {
		return 0, fmt.Errorf("sequence in %d: set regs: %w", s.tid, err)
	}
	if err := unix.PtraceCont(s.tid, 0); err != nil {
		return 0, fmt.Errorf("sequence in %d: resume: %w", s.tid, err)
	}
	for {
		ws, err := ptrace.Wait(s.tid)
		if err != nil {
			return 0, err
		}
		if ws.Exited() || ws.Signaled() {
			return 0, fmt.Errorf("sequence in %d: %w (status %#x)", s.tid, ErrExited, uint32(ws))
		}
		if ws.Stopped() && ws.StopSignal() == unix.SIGTRAP && uint32(ws)>>16 == 0 {
			break
		}
		// Anything else (a stop for a signal, which is blocked or
		// not the program's yet): go on without delivering it.
		if err := unix.PtraceCont(s.tid, 0); err != nil {
			return 0, fmt.Errorf("sequence in %d: resume: %w", s.tid, err)
		}
	}
	if err := unix.PtraceGetRegs(s.tid, &r); err != nil {
		return 0, fmt.Errorf("sequence in %d: get regs: %w", s.tid, err)
	}
	if r.Rip != s.code+stopAt {
		return 0, fmt.Errorf("sequence in %d: stopped at %#x, want %#x", s.tid, r.Rip, s.code+stopAt)
	}
	left := int(r.R12)
	if left < 0 || left > n {
		return 0, fmt.Errorf("sequence in %d: %d calls left of %d", s.tid, left, n)
	}
	if left == 0 {
		return n, nil
	}
	return n - left + 1, nil
}

// ErrExited: the thread ended while its sequence ran.
var ErrExited = errors.New("tracee exited")

func readMem(pid int, addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &b[0]}}
	local[0].SetLen(len(b))
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	n, err := unix.ProcessVMReadv(pid, local, remote, 0)
	if err != nil {
		return fmt.Errorf("read results in %d: %w", pid, err)
	}
	if n != len(b) {
		return fmt.Errorf("read results in %d: short read", pid)
	}
	return nil
}
