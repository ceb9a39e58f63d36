// Package sparse walks the data extents of a sparse file with
// lseek(SEEK_DATA) and lseek(SEEK_HOLE): the pages of a shared memory
// object, of a memfd, of a checkpoint's vma pages file.
package sparse

import (
	"errors"
	"fmt"
	"iter"

	"golang.org/x/sys/unix"
)

// Extent is a range of bytes [Start, End) that holds data.
type Extent struct {
	Start, End int64
}

// Data yields the data extents of the open file fd that lie in [start,
// end), in order, each cut at end (not at start: an extent that begins
// before start, which SEEK_DATA never reports, cannot occur). It stops at
// the first error, which it yields with a zero Extent. Holes are as the
// file system reports them: one that does not track holes reports the
// whole file as data.
func Data(fd int, start, end int64) iter.Seq2[Extent, error] {
	return func(yield func(Extent, error) bool) {
		for off := start; off < end; {
			d, err := unix.Seek(fd, off, unix.SEEK_DATA)
			if errors.Is(err, unix.ENXIO) || err == nil && d >= end {
				return // no data after off
			}
			if err != nil {
				yield(Extent{}, fmt.Errorf("seek data from %d: %w", off, err))
				return
			}
			h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
			if err != nil {
				yield(Extent{}, fmt.Errorf("seek hole from %d: %w", d, err))
				return
			}
			h = min(h, end)
			if !yield(Extent{d, h}, nil) {
				return
			}
			off = h
		}
	}
}
