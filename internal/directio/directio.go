// Package directio helps write files with O_DIRECT: the kernel moves the
// data from the caller's memory to the device without copying it into
// the page cache, provided the memory, the file offset and the length
// are aligned to the device's block (Align covers every Linux block size
// up to the page size).
package directio

import "unsafe"

// Align is the alignment of memory, offsets and lengths that O_DIRECT
// writes here keep.
const Align = 4096

// Aligned reports whether every buffer of bufs starts at an address that
// is a multiple of Align and has a length that is one.
func Aligned(bufs [][]byte) bool {
	for _, b := range bufs {
		if len(b)%Align != 0 {
			return false
		}
		if len(b) > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(b)))%Align != 0 {
			return false
		}
	}
	return true
}
