package dedup

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
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
}
