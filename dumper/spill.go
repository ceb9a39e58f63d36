package dumper

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// spillFile holds the pages copied out of a frozen tree beyond the memory
// budget: an unlinked file in $TMPDIR, so the page cache absorbs them
// (and writes them back to disk if memory runs short) while the dumper's
// own memory stays within the budget. Pages are hashed and stored from
// it (mapped) after the tree is released, and each chunk stored is punched
// out of the file, so the file gives its memory back as the store fills.
type spillFile struct {
	f    *os.File
	size int64
}

// newSpillFile creates the spill file in dir, unlinked from the start
// (O_TMPFILE; a named file removed at once where dir does not support it).
func newSpillFile(dir string) (*spillFile, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return &spillFile{f: os.NewFile(uintptr(fd), dir+"/(spill)")}, nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EINVAL) {
		return nil, fmt.Errorf("spill file in %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "ckptfs-spill-")
	if err != nil {
		return nil, fmt.Errorf("spill file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("spill file: %w", err)
	}
	return &spillFile{f: f}, nil
}

// prefault readies n bytes of the file ahead of the data, before the
// tree is frozen, so that the writes while frozen are quick:
//
//   - When n fits in the kernel's dirty headroom (dirtyHeadroom), the
//     blocks are only reserved with fallocate(2): nothing is written and
//     a disk too full for the spill fails the dump before the freeze.
//     Writing zeros first (below) made the writes while frozen about
//     1.5x faster per byte (768 MiB: 100 against 160-250 ms), but cost
//     as much again before the freeze (260-300 ms per 768 MiB) and the
//     whole size in dirty pages and write bandwidth.
//   - Beyond it, writes while frozen would make new dirty pages past the
//     background threshold and be throttled to the disk's speed (4 GiB
//     dump, fallocate only: frozen 11.2 s against 2.4 s): the file is
//     written full of zeros first, so the dirty pages, and the
//     throttling, come before the freeze and the writes while frozen
//     overwrite pages already in the page cache.
func (s *spillFile) prefault(n int64) error { return s.reserve(n, n > dirtyHeadroom()) }

// reserve is prefault with the choice made: fill says whether to write
// the zeros (spillStripes decides it for all its files at once).
func (s *spillFile) reserve(n int64, fill bool) error {
	err := unix.Fallocate(int(s.f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, n)
	if err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("reserve spill file: %w", err)
	}
	if !fill {
		return nil
	}
	zero := make([]byte, chunkPages*image.PageSize)
	for off := int64(0); off < n; off += int64(len(zero)) {
		if _, err := s.f.WriteAt(zero[:min(int64(len(zero)), n-off)], off); err != nil {
			return fmt.Errorf("prefault spill file: %w", err)
		}
	}
	return nil
}

// write appends b and returns its offset.
func (s *spillFile) write(b []byte) (int64, error) {
	off := s.size
	if _, err := s.f.WriteAt(b, off); err != nil {
		return 0, fmt.Errorf("write spill file: %w", err)
	}
	s.size += int64(len(b))
	return off, nil
}

// writeAt writes b at off, a place of its own: the copy's threads
// (copyfill.go) write chunks at once, each where its order puts it.
func (s *spillFile) writeAt(b []byte, off int64) error {
	if _, err := s.f.WriteAt(b, off); err != nil {
		return fmt.Errorf("write spill file: %w", err)
	}
	return nil
}

// mapBack maps the n bytes at off (a multiple of the page size) read-only,
// for the workers to hash and store straight from the page cache: a
// read-back would copy every spilled byte once more (at 1 GiB, 768 MiB of
// kernel copy and its CPU). MAP_POPULATE maps the pages at once, so the
// workers take no page fault per page. release gives them back.
func (s *spillFile) mapBack(off int64, n int) ([]byte, error) {
	b, err := unix.Mmap(int(s.f.Fd()), off, n, unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("map spill file: %w", err)
	}
	return b, nil
}

// release unmaps b, mapped by mapBack at off, and frees it in the file.
func (s *spillFile) release(b []byte, off int64) {
	unix.Munmap(b)
	// Freeing is best effort: the file goes away at close anyway.
	_ = unix.Fallocate(int(s.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, int64(len(b)))
}

func (s *spillFile) close() error { return s.f.Close() }
