package directio

import (
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// ReadFull reads into all of vecs, one after another, from fd at off
// (preadv, again after EINTR and short reads). A file that ends first
// gives an error wrapping io.ErrUnexpectedEOF.
func ReadFull(fd int, vecs [][]byte, off int64) error {
	vecs = append([][]byte(nil), vecs...)
	for len(vecs) > 0 {
		n, err := unix.Preadv(fd, vecs, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("file ends at %d: %w", off, io.ErrUnexpectedEOF)
		}
		off += int64(n)
		for n > 0 {
			if k := min(n, len(vecs[0])); k < len(vecs[0]) {
				vecs[0] = vecs[0][k:]
				n = 0
			} else {
				vecs = vecs[1:]
				n -= k
			}
		}
	}
	return nil
}

// CachedBytes says how many bytes of fd from off, n bytes long, are in
// the page cache (cachestat).
func CachedBytes(fd int, off, n int64) (int64, error) {
	cr := unix.CachestatRange{Off: uint64(off), Len: uint64(n)}
	var cs unix.Cachestat_t
	if err := unix.Cachestat(uint(fd), &cr, &cs, 0); err != nil {
		return 0, err
	}
	return int64(cs.Cache) * Align, nil
}
