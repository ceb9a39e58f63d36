package proc

import (
	"encoding/binary"
	"fmt"
	"os"
)

// Pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	PMPresent    = 1 << 63
	PMSwapped    = 1 << 62
	PMFileShared = 1 << 61 // page is file-backed or shared anonymous
)

// Pagemap reads /proc/<pid>/pagemap.
type Pagemap struct{ f *os.File }

// OpenPagemap opens the pagemap of pid.
func OpenPagemap(pid int) (*Pagemap, error) {
	f, err := os.Open(Path(pid, "pagemap"))
	if err != nil {
		return nil, fmt.Errorf("open pagemap of %d: %w", pid, err)
	}
	return &Pagemap{f: f}, nil
}

// Fd is the pagemap file's descriptor, for ioctls on it (PAGEMAP_SCAN).
func (p *Pagemap) Fd() uintptr { return p.f.Fd() }

// Close closes the pagemap file.
func (p *Pagemap) Close() error { return p.f.Close() }

// Entries returns the pagemap entries of pages [start, end) into dst (reused if large enough).
func (p *Pagemap) Entries(start, end uint64, dst []uint64) ([]uint64, error) {
	n := int((end - start) / 4096)
	if cap(dst) < n {
		dst = make([]uint64, n)
	}
	dst = dst[:n]
	buf := make([]byte, 8*4096)
	for i := 0; i < n; {
		k := min(n-i, len(buf)/8)
		off := int64(start/4096+uint64(i)) * 8
		got, err := p.f.ReadAt(buf[:8*k], off)
		if got < 8*k {
			return nil, fmt.Errorf("read pagemap at %#x: %w", start+uint64(i)*4096, err)
		}
		for j := 0; j < k; j++ {
			dst[i+j] = binary.LittleEndian.Uint64(buf[8*j:])
		}
		i += k
	}
	return dst, nil
}
