package directio

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// HugeSize is the size and alignment of the transparent huge pages
// HugeBuffer asks for (x86-64's PMD size).
const HugeSize = 2 << 20

// HugeBuffer returns n bytes (a multiple of HugeSize) of anonymous memory
// at a HugeSize-aligned address, asked to be backed by transparent huge
// pages (MADV_HUGEPAGE). An O_DIRECT read into memory of 4 KiB pages is
// cut into requests of as many pages as the device takes segments (254
// on virtio-blk, so 1 MiB), and on a virtual disk that costs some 40 %
// of its throughput; into huge pages a read of 4 MiB is one request.
// Where the kernel gives no huge page the memory is ordinary (and
// correct). Free it with FreeHuge.
func HugeBuffer(n int) ([]byte, error) {
	if n <= 0 || n%HugeSize != 0 {
		return nil, fmt.Errorf("huge buffer of %d bytes: not a multiple of %d", n, HugeSize)
	}
	// Map HugeSize more, then unmap the ends off the aligned middle.
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(n+HugeSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("huge buffer: %w", err)
	}
	head := int((HugeSize - uintptr(p)%HugeSize) % HugeSize)
	if head > 0 {
		unix.MunmapPtr(p, uintptr(head))
	}
	if tail := HugeSize - head; tail > 0 {
		unix.MunmapPtr(unsafe.Add(p, head+n), uintptr(tail))
	}
	b := unsafe.Slice((*byte)(unsafe.Add(p, head)), n)
	unix.Madvise(b, unix.MADV_HUGEPAGE) // a hint: without it the memory works as well
	return b, nil
}

// FreeHuge unmaps a buffer of HugeBuffer; b must not be used afterwards.
func FreeHuge(b []byte) error {
	if err := unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(cap(b))); err != nil {
		return fmt.Errorf("free huge buffer: %w", err)
	}
	return nil
}
