// Package uffd wraps the userfaultfd ioctls and messages that lazy
// restore serves page faults with (linux/userfaultfd.h): fill a missing
// range (UFFDIO_COPY, UFFDIO_ZEROPAGE), poison it so that a touch raises
// SIGBUS (UFFDIO_POISON), wake waiting threads (UFFDIO_WAKE), and read
// fault and event messages (UFFD_EVENT_*).
package uffd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// API handshake and registration (struct uffdio_api, uffdio_register).
const (
	API          = 0xAA
	IoctlAPI     = 0xC018AA3F // _IOWR(0xAA, 0x3F, struct uffdio_api)
	IoctlReg     = 0xC020AA00 // _IOWR(0xAA, 0x00, struct uffdio_register)
	ioctlUnreg   = 0x8010AA01 // _IOR(0xAA, 0x01, struct uffdio_range)
	ioctlWake    = 0x8010AA02 // _IOR(0xAA, 0x02, struct uffdio_range)
	ioctlCopy    = 0xC028AA03 // _IOWR(0xAA, 0x03, struct uffdio_copy)
	ioctlZero    = 0xC020AA04 // _IOWR(0xAA, 0x04, struct uffdio_zeropage)
	ioctlPoison  = 0xC020AA08 // _IOWR(0xAA, 0x08, struct uffdio_poison)
	ioctlWP      = 0xC018AA06 // _IOWR(0xAA, 0x06, struct uffdio_writeprotect)
	RegisterMiss = 1          // UFFDIO_REGISTER_MODE_MISSING
	RegisterWP   = 1 << 1     // UFFDIO_REGISTER_MODE_WP
	modeWP       = 1 << 0     // UFFDIO_WRITEPROTECT_MODE_WP
)

// Features asked for in UFFDIO_API.
const (
	FeatureEventFork   = 1 << 1
	FeatureEventRemap  = 1 << 2
	FeatureEventRemove = 1 << 3
	FeatureEventUnmap  = 1 << 6
	FeatureThreadID    = 1 << 8
	FeaturePoison      = 1 << 14
	// FeatureWPAsync: a write to a write-protected page is resolved by
	// the kernel (the protection of that page is dropped), no message.
	FeatureWPAsync = 1 << 15
)

// LazyFeatures are the features lazy restore needs: every event that
// changes which pages a registered range holds, and poisoning.
const LazyFeatures = FeatureEventFork | FeatureEventRemap | FeatureEventRemove | FeatureEventUnmap | FeaturePoison

// Message kinds (uffd_msg.event).
const (
	EventPagefault = 0x12
	EventFork      = 0x13
	EventRemap     = 0x14
	EventRemove    = 0x15
	EventUnmap     = 0x16
)

// MsgSize is the size of one struct uffd_msg.
const MsgSize = 32

// Msg is one decoded uffd_msg.
type Msg struct {
	Event uint8
	// Pagefault: Addr (the faulting address) and Flags.
	Flags, Addr uint64
	// Fork: the child's userfaultfd, installed in the reader's fd table.
	FD int
	// Remap: From, To, Len. Remove and unmap: Start, End.
	From, To, Len uint64
	Start, End    uint64
}

var le = binary.LittleEndian

// Decode parses one uffd_msg.
func Decode(b []byte) Msg {
	m := Msg{Event: b[0]}
	a := b[8:]
	switch m.Event {
	case EventPagefault:
		m.Flags, m.Addr = le.Uint64(a), le.Uint64(a[8:])
	case EventFork:
		m.FD = int(le.Uint32(a))
	case EventRemap:
		m.From, m.To, m.Len = le.Uint64(a), le.Uint64(a[8:]), le.Uint64(a[16:])
	case EventRemove, EventUnmap:
		m.Start, m.End = le.Uint64(a), le.Uint64(a[8:])
	}
	return m
}

// Read reads the messages ready on the non-blocking userfaultfd fd into
// buf (a multiple of MsgSize) and returns them; none when it would block.
func Read(fd int, buf []byte) ([]Msg, error) {
	n, err := unix.Read(fd, buf)
	if errors.Is(err, unix.EAGAIN) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read userfaultfd: %w", err)
	}
	var out []Msg
	for off := 0; off+MsgSize <= n; off += MsgSize {
		out = append(out, Decode(buf[off:off+MsgSize]))
	}
	return out, nil
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) unix.Errno {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	return e
}

type copyArg struct {
	dst, src, len, mode uint64
	copied              int64
}

// Copy fills the missing pages at dst with src (UFFDIO_COPY) and wakes
// the threads waiting on them. It returns the bytes copied and the error
// that stopped it: unix.EEXIST when the page at dst+copied is already
// present, unix.ENOENT when the range is no longer registered (unmapped),
// unix.ESRCH when the address space is gone, unix.EAGAIN when an event
// (fork, mremap, madvise, munmap) must be read first.
func Copy(fd int, dst uint64, src []byte) (int, error) {
	done := 0
	for done < len(src) {
		a := copyArg{dst: dst + uint64(done), src: uint64(uintptr(unsafe.Pointer(&src[done]))), len: uint64(len(src) - done)}
		e := ioctl(fd, ioctlCopy, unsafe.Pointer(&a))
		if a.copied > 0 {
			done += int(a.copied)
			if e == unix.EAGAIN {
				continue // a partial copy: the next call says what stopped it
			}
		}
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return done, e
		}
	}
	return done, nil
}

type rangeResult struct {
	start, len, mode uint64
	done             int64
}

// ZeroPage maps the zero page over the missing pages of [start,
// start+n) (UFFDIO_ZEROPAGE) and wakes the threads waiting on them.
func ZeroPage(fd int, start, n uint64) error {
	a := rangeResult{start: start, len: n}
	if e := ioctl(fd, ioctlZero, unsafe.Pointer(&a)); e != 0 {
		return e
	}
	return nil
}

// Poison marks the missing pages of [start, start+n) poisoned
// (UFFDIO_POISON): a touch raises SIGBUS, even after the userfaultfd is
// closed. Waiting threads are woken and get their SIGBUS.
func Poison(fd int, start, n uint64) error {
	for n > 0 {
		a := rangeResult{start: start, len: n}
		e := ioctl(fd, ioctlPoison, unsafe.Pointer(&a))
		if a.done > 0 {
			start += uint64(a.done)
			n -= uint64(a.done)
			if e == unix.EAGAIN {
				continue
			}
		}
		if e == unix.EINTR {
			continue
		}
		if e == unix.EEXIST && n > 0 { // a present page: skip it
			start += 4096
			n -= 4096
			continue
		}
		if e != 0 {
			return e
		}
	}
	return nil
}

// Wake wakes the threads waiting on faults in [start, start+n).
func Wake(fd int, start, n uint64) error {
	a := [2]uint64{start, n}
	if e := ioctl(fd, ioctlWake, unsafe.Pointer(&a)); e != 0 {
		return e
	}
	return nil
}

// WriteProtect write-protects the present pages of [start, start+n), a
// range registered with RegisterWP (UFFDIO_WRITEPROTECT), again while the
// kernel answers EAGAIN (the mm is changing).
func WriteProtect(fd int, start, n uint64) error {
	a := [3]uint64{start, n, modeWP}
	for {
		switch e := ioctl(fd, ioctlWP, unsafe.Pointer(&a)); e {
		case 0:
			return nil
		case unix.EINTR, unix.EAGAIN:
			continue
		default:
			return fmt.Errorf("UFFDIO_WRITEPROTECT %#x+%#x: %w", start, n, e)
		}
	}
}

// Unregister stops missing-page handling for [start, start+n).
func Unregister(fd int, start, n uint64) error {
	a := [2]uint64{start, n}
	if e := ioctl(fd, ioctlUnreg, unsafe.Pointer(&a)); e != 0 {
		return e
	}
	return nil
}

// APIArg is struct uffdio_api for a UFFDIO_API asking for features.
func APIArg(features uint64) []byte {
	b := make([]byte, 24)
	le.PutUint64(b, API)
	le.PutUint64(b[8:], features)
	return b
}

// RegisterArg is struct uffdio_register for [start, start+n) in mode.
func RegisterArg(start, n, mode uint64) []byte {
	b := make([]byte, 32)
	le.PutUint64(b, start)
	le.PutUint64(b[8:], n)
	le.PutUint64(b[16:], mode)
	return b
}

// New creates a userfaultfd in the calling process with features
// (tests: the restorer creates its userfaultfds inside the task).
func New(features uint64) (int, error) {
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if e != 0 {
		return -1, fmt.Errorf("userfaultfd: %w", e)
	}
	api := APIArg(features)
	if e := ioctl(int(fd), IoctlAPI, unsafe.Pointer(&api[0])); e != 0 {
		unix.Close(int(fd))
		return -1, fmt.Errorf("UFFDIO_API features %#x: %w", features, e)
	}
	return int(fd), nil
}

// Register registers [start, start+n) of the calling process with fd.
func Register(fd int, start, n, mode uint64) error {
	b := RegisterArg(start, n, mode)
	if e := ioctl(fd, IoctlReg, unsafe.Pointer(&b[0])); e != 0 {
		return fmt.Errorf("UFFDIO_REGISTER %#x+%#x: %w", start, n, e)
	}
	return nil
}
