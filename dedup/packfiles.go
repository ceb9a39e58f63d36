package dedup

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/directio"
)

// packFiles keeps the sealed packs open for reading. A read holds the read
// lock for its pread only; gc takes the write lock to close and delete a
// pack, so no read meets a closed descriptor.
type packFiles struct {
	dir string
	// foreign: the packs are another process's store (PackReader): each
	// is opened without following a symlink or blocking, and must be a
	// regular file.
	foreign bool
	closed  bool // close was called: no pack is opened again
	mu      sync.RWMutex
	files   map[packID]*os.File
	// direct holds the packs opened again with O_DIRECT (readCold), -1
	// for a pack whose file system refused it.
	direct map[packID]int
}

func newPackFiles(dir string) *packFiles {
	return &packFiles{dir: dir, files: make(map[packID]*os.File)}
}

// readAt reads len(p) bytes of pack id at off.
func (pf *packFiles) readAt(id packID, p []byte, off int64) error {
	pf.mu.RLock()
	f := pf.files[id]
	if f == nil {
		pf.mu.RUnlock()
		if err := pf.open(id); err != nil {
			return err
		}
		pf.mu.RLock()
		f = pf.files[id]
	}
	defer pf.mu.RUnlock()
	if f == nil {
		return fmt.Errorf("pack %s: %w", id, os.ErrNotExist)
	}
	if _, err := f.ReadAt(p, off); err != nil {
		return fmt.Errorf("read pack %s at %d: %w", id, off, err)
	}
	return nil
}

// willNeed asks the kernel to read n bytes of pack id at off ahead
// (a hint: errors are ignored). Like a read, it holds the read lock
// while it uses the descriptor, so a close or gc cannot close it under
// the hint (or hand its number to another file).
func (pf *packFiles) willNeed(id packID, off, n int64) {
	pf.mu.RLock()
	f := pf.files[id]
	if f == nil {
		pf.mu.RUnlock()
		if pf.open(id) != nil {
			return
		}
		pf.mu.RLock()
		f = pf.files[id]
	}
	defer pf.mu.RUnlock()
	if f != nil {
		unix.Fadvise(int(f.Fd()), off, n, unix.FADV_WILLNEED)
	}
}

// readvCold reads the bytes of pack id from off into vecs, one after
// another, as readAt would, but with O_DIRECT when every slice of vecs
// and off are page aligned and most of the range is not in the page
// cache (cachestat): the disk's data then goes straight into vecs,
// without a page cache of the pack to allocate, fill and copy from, for
// a reader that reads a range once (the mount's read-ahead). Otherwise,
// or if the pack's file system refuses O_DIRECT, it reads through the
// page cache.
func (pf *packFiles) readvCold(id packID, vecs [][]byte, off int64) error {
	fd := -1
	if directio.Aligned(vecs) && off%directio.Align == 0 {
		var err error
		if fd, err = pf.directFD(id); err != nil {
			return err
		}
	}
	pf.mu.RLock()
	defer pf.mu.RUnlock()
	f := pf.files[id]
	if f == nil || (fd >= 0 && pf.direct[id] != fd) {
		// Closed or removed since (gc).
		return fmt.Errorf("pack %s: %w", id, os.ErrNotExist)
	}
	n := 0
	for _, v := range vecs {
		n += len(v)
	}
	if fd >= 0 {
		if cached, err := directio.CachedBytes(int(f.Fd()), off, int64(n)); err == nil && cached >= int64(n)/2 {
			fd = -1 // mostly cached: a copy from the cache costs less than the disk
		}
	}
	if fd < 0 {
		fd = int(f.Fd())
	} else {
		coldDirectReads.Add(1)
	}
	err := directio.ReadFull(fd, vecs, off)
	if err == unix.EINVAL && fd != int(f.Fd()) {
		// An alignment the file system wants beyond the page's.
		err = directio.ReadFull(int(f.Fd()), vecs, off)
	}
	if err != nil {
		return fmt.Errorf("read pack %s at %d: %w", id, off, err)
	}
	return nil
}

// coldDirectReads counts the reads readvCold made with O_DIRECT (for the
// tests).
var coldDirectReads atomic.Int64

// directFD returns the O_DIRECT descriptor of pack id, opening it (and
// the pack) if need be; -1 if the pack's file system refuses O_DIRECT.
func (pf *packFiles) directFD(id packID) (int, error) {
	pf.mu.RLock()
	fd, ok := pf.direct[id]
	f := pf.files[id]
	pf.mu.RUnlock()
	if ok && f != nil {
		return fd, nil
	}
	if f == nil {
		if err := pf.open(id); err != nil {
			return -1, err
		}
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	f = pf.files[id]
	if f == nil {
		return -1, fmt.Errorf("pack %s: %w", id, os.ErrNotExist)
	}
	if fd, ok := pf.direct[id]; ok {
		return fd, nil
	}
	// The descriptor opened again through /proc/self/fd names the same
	// file even if the path was replaced meanwhile.
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		fd = -1
	}
	if pf.direct == nil {
		pf.direct = make(map[packID]int)
	}
	pf.direct[id] = fd
	return fd, nil
}

// dropDirect forgets pack id's O_DIRECT descriptor, closing it (the
// caller holds the write lock).
func (pf *packFiles) dropDirect(id packID) {
	if fd, ok := pf.direct[id]; ok {
		if fd >= 0 {
			unix.Close(fd)
		}
		delete(pf.direct, id)
	}
}

func (pf *packFiles) open(id packID) error {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if pf.files[id] != nil {
		return nil
	}
	if pf.closed {
		return fmt.Errorf("pack %s: %w", id, os.ErrClosed)
	}
	f, err := pf.openFile(id)
	if err != nil {
		return fmt.Errorf("open pack %s: %w", id, err)
	}
	pf.files[id] = f
	return nil
}

func (pf *packFiles) openFile(id packID) (*os.File, error) {
	if !pf.foreign {
		return os.Open(packPath(pf.dir, id))
	}
	f, err := os.OpenFile(packPath(pf.dir, id), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, errors.New("not a regular file")
	}
	return f, nil
}

// remove closes and deletes pack id.
func (pf *packFiles) remove(id packID) error {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if f := pf.files[id]; f != nil {
		f.Close()
		delete(pf.files, id)
	}
	pf.dropDirect(id)
	if err := os.Remove(packPath(pf.dir, id)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove pack %s: %w", id, err)
	}
	return nil
}

func (pf *packFiles) close() {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	pf.closed = true
	for id, f := range pf.files {
		f.Close()
		delete(pf.files, id)
	}
	for id := range pf.direct {
		pf.dropDirect(id)
	}
}
