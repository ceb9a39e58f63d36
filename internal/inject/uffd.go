//go:build linux && amd64

package inject

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// userfaultfd ioctls (linux/userfaultfd.h).
const (
	UffdAPI          = 0xAA
	UffdioAPI        = 0xC018AA3F // _IOWR(0xAA, 0x3F, struct uffdio_api)
	UffdioRegister   = 0xC020AA00 // _IOWR(0xAA, 0x00, struct uffdio_register)
	uffdioCopy       = 0xC028AA03 // _IOWR(0xAA, 0x03, struct uffdio_copy)
	UffdRegisterMiss = 1          // UFFDIO_REGISTER_MODE_MISSING
)

type uffdioCopyArg struct {
	dst, src, len, mode uint64
	copied              int64
}

// UffdCopy fills the missing pages at dst, in the address space the
// userfaultfd ufd belongs to, with src (UFFDIO_COPY): the kernel allocates
// each page and copies into it, without zeroing it first or faulting.
// dst and len(src) must be page aligned and the range registered.
func UffdCopy(ufd int, dst uint64, src []byte) error {
	for len(src) > 0 {
		a := uffdioCopyArg{dst: dst, src: uint64(uintptr(unsafe.Pointer(&src[0]))), len: uint64(len(src))}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(ufd), uffdioCopy, uintptr(unsafe.Pointer(&a)))
		if a.copied > 0 {
			src = src[a.copied:]
			dst += uint64(a.copied)
		}
		if e == unix.EAGAIN || e == unix.EINTR {
			continue
		}
		if e != 0 {
			return fmt.Errorf("uffdio_copy %d bytes at %#x: %w", len(src), dst, e)
		}
	}
	return nil
}
