package restorer

import (
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// Shared memory (vma kind shmem: MAP_SHARED|MAP_ANONYMOUS, memfd) is one
// object for every task that maps the same (dev, inode): the restorer
// creates it once, fills it from the saved pages, and every task maps it
// MAP_SHARED, so parent and child share it again instead of each getting
// a private copy. A memfd recorded as an object (objects/memfd-<ino>) is
// also what fds on it are opened on (files.memfd), so writes through a
// mapping are seen through the fd; it gets its name, size, mode and seals
// back. SysV segments are restored as segments (kind_sysvshm.go).

// shmemKey names the shared memory object of v.
func shmemKey(v *image.VMA) string {
	if v.Inode == 0 {
		return fmt.Sprintf("vma-%x", v.Start)
	}
	return fmt.Sprintf("%s:%d", v.Dev, v.Inode)
}

// isShmem reports a vma restored from a shared memory object.
func isShmem(v *image.VMA) bool {
	return v.Kind == image.VMAShmem && v.Shared()
}

// memfdOf returns the memfd object that vma v maps, nil if there is none
// (shared anonymous memory, or a checkpoint without memfd objects).
func memfdOf(c *image.Checkpoint, v *image.VMA) *image.Object {
	if v.Inode == 0 || !strings.HasPrefix(v.Name, "/memfd:") {
		return nil
	}
	for _, o := range c.Objects {
		if o.Kind != image.ObjMemfd {
			continue
		}
		if m, err := image.ParseMemfd(o, false); err == nil && m.Maps(v) {
			return o
		}
	}
	return nil
}

// shmem returns the restorer's fd on the shared memory object of v,
// creating and filling it on first use.
func (r *restorer) shmem(v *image.VMA) (int, error) {
	key := shmemKey(v)
	if fd, ok := r.shm[key]; ok {
		return fd, nil
	}
	var fd int
	var err error
	o := memfdOf(r.c, v)
	if o != nil {
		// Created with its unmapped data (here or by an fd on it, earlier).
		if fd, err = r.files.memfd(r.c, o); err != nil {
			return -1, err
		}
	} else {
		var size uint64
		for _, t := range r.c.Tasks {
			for _, w := range t.VMAs {
				if isShmem(w) && shmemKey(w) == key {
					size = max(size, w.Offset+w.Len())
				}
			}
		}
		if fd, err = newShmem(v.Name, size); err != nil {
			return -1, fmt.Errorf("shared memory %s (%s): %w", key, v.Name, err)
		}
		r.files.keep(fd)
	}
	r.shm[key] = fd
	if err := r.fillShmem(fd, key); err != nil {
		return -1, err
	}
	return fd, nil
}

// fillShmem writes the saved pages of every vma (of any task) of shared
// memory object key into fd. Tasks may have saved different pages of the
// same range (each has the pages it touched): every saved page is written
// once.
func (r *restorer) fillShmem(fd int, key string) error {
	done := pagesWritten{}
	pwrite := func(b []byte, off int64) error {
		_, err := unix.Pwrite(fd, b, off)
		return err
	}
	for _, t := range r.c.Tasks {
		for _, w := range t.VMAs {
			if !isShmem(w) || shmemKey(w) != key {
				continue
			}
			if err := readPages(image.PagesPath(r.dir, t.PID, w), w, done, pwrite); err != nil {
				return fmt.Errorf("task %d: vma %s: fill shared memory: %w", t.PID, w.DirName(), err)
			}
		}
	}
	return nil
}

// pagesWritten is the set of pages (by index in the object) written.
type pagesWritten map[int64]bool

// pending returns the parts of ranges (byte ranges of a vma at offset base
// of the object, page aligned) whose pages are not done, and marks them
// done.
func (done pagesWritten) pending(base int64, ranges [][2]int64) [][2]int64 {
	var out [][2]int64
	for _, r := range ranges {
		for off := r[0]; off < r[1]; off += image.PageSize {
			p := (base + off) / image.PageSize
			if done[p] {
				continue
			}
			done[p] = true
			if n := len(out); n > 0 && out[n-1][1] == off {
				out[n-1][1] = min(off+image.PageSize, r[1])
			} else {
				out = append(out, [2]int64{off, min(off+image.PageSize, r[1])})
			}
		}
	}
	return out
}

// shmemMapped is called when vma i of p is mapped: after the last
// mapping of a memfd in the restore, its seals are added (a write seal
// forbids new writable shared mappings, F_SEAL_FUTURE_WRITE even while
// writable mappings made before it exist).
func (p *target) shmemMapped(i int) error {
	v := p.t.VMAs[i]
	o := memfdOf(p.r.c, v)
	if o == nil {
		return nil
	}
	key := shmemKey(v)
	if !p.lastInRestore(i, func(t *image.Task, j int) bool { return isShmem(t.VMAs[j]) && shmemKey(t.VMAs[j]) == key }) {
		return nil
	}
	if err := p.flush(); err != nil { // the queued mmap, before the seals
		return err
	}
	return addSeals(p.r.shm[key], o)
}

// privateMemfd installs the memfd that private file vma v maps in the
// task and returns its fd there (pages the task had not written are the
// file's).
func (p *target) privateMemfd(v *image.VMA) (uint64, error) {
	own, err := p.r.files.memfd(p.r.c, memfdOf(p.r.c, v))
	if err != nil {
		return 0, err
	}
	fd, err := p.taskFD(own)
	if err != nil {
		return 0, fmt.Errorf("vma %s: memfd: %w", v.DirName(), err)
	}
	return fd, nil
}

// newShmem creates a shared memory file of size bytes. For shared
// anonymous memory ("/dev/zero (deleted)") it is the shmem file of a
// MAP_SHARED|MAP_ANONYMOUS mapping of the restorer, opened through
// /proc/self/map_files, so the restored maps read as before; otherwise a
// memfd named like the recorded one.
func newShmem(name string, size uint64) (int, error) {
	if strings.HasPrefix(name, "/dev/zero") {
		m, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
		if err == nil {
			start := uint64(uintptr(unsafe.Pointer(&m[0])))
			fd, err := unix.Open(fmt.Sprintf("/proc/self/map_files/%x-%x", start, start+size), unix.O_RDWR|unix.O_CLOEXEC, 0)
			unix.Munmap(m)
			if err == nil {
				return fd, nil
			}
		}
		// Fall back to a memfd.
	}
	mname := strings.TrimSuffix(strings.TrimPrefix(name, "/memfd:"), " (deleted)")
	if mname == "" || strings.HasPrefix(mname, "/") {
		mname = "ckptfs-shmem"
	}
	fd, err := unix.MemfdCreate(mname, unix.MFD_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("ftruncate %d: %w", size, err)
	}
	return fd, nil
}

// taskFD installs the restorer's fd own in the task with an injected
// pidfd_open + pidfd_getfd and returns its number there (close-on-exec).
func (p *target) taskFD(own int) (uint64, error) {
	pidfd, err := p.restorerPidfd() // pidns.go
	if err != nil {
		return 0, err
	}
	fd, err := p.sys(p.pid, unix.SYS_PIDFD_GETFD, pidfd, uint64(own), 0)
	p.sys(p.pid, unix.SYS_CLOSE, pidfd)
	return fd, err
}
