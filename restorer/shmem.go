package restorer

import (
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// Shared memory (vma kind shmem: MAP_SHARED|MAP_ANONYMOUS, memfd) is one
// object for every task that maps the same (dev, inode): the restorer
// creates it once, fills it from the saved pages, and every task maps it
// MAP_SHARED, so parent and child share it again instead of each getting
// a private copy.

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

// shmem returns the restorer's fd on the shared memory object of v,
// creating and filling it on first use.
func (r *restorer) shmem(v *image.VMA) (int, error) {
	key := shmemKey(v)
	if fd, ok := r.shm[key]; ok {
		return fd, nil
	}
	var size uint64
	for _, t := range r.c.Tasks {
		for _, w := range t.VMAs {
			if isShmem(w) && shmemKey(w) == key {
				size = max(size, w.Offset+w.Len())
			}
		}
	}
	fd, err := newShmem(v.Name, size)
	if err != nil {
		return -1, fmt.Errorf("shared memory %s (%s): %w", key, v.Name, err)
	}
	r.files.keep(fd)
	r.shm[key] = fd
	// Fill from the saved pages; a range of the object that an earlier
	// vma (of this or another task) covered is not written again.
	var done [][2]uint64
	covered := func(a, b uint64) bool {
		for _, d := range done {
			if d[0] <= a && b <= d[1] {
				return true
			}
		}
		return false
	}
	for _, t := range r.c.Tasks {
		for _, w := range t.VMAs {
			if !isShmem(w) || shmemKey(w) != key || covered(w.Offset, w.Offset+w.Len()) {
				continue
			}
			if err := fillShmem(fd, image.PagesPath(r.dir, t.PID, w), w); err != nil {
				return -1, fmt.Errorf("task %d: vma %s: %w", t.PID, w.DirName(), err)
			}
			done = append(done, [2]uint64{w.Offset, w.Offset + w.Len()})
		}
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

// fillShmem writes the data ranges of pages file path (of vma v) into
// the shared memory file fd at v's offset.
func fillShmem(fd int, path string, v *image.VMA) error {
	rs, err := dataRanges(path, int64(v.Len()))
	if err != nil || len(rs) == 0 {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("checkpoint file %s: %w", path, pathErr(err))
	}
	defer f.Close()
	buf := make([]byte, chunkSize)
	for _, r := range rs {
		for off := r[0]; off < r[1]; {
			n := min(r[1]-off, chunkSize)
			b := buf[:n]
			if _, err := f.ReadAt(b, off); err != nil {
				return fmt.Errorf("checkpoint file %s: %w", path, err)
			}
			if _, err := unix.Pwrite(fd, b, int64(v.Offset)+off); err != nil {
				return fmt.Errorf("fill shared memory: %w", err)
			}
			off += n
		}
	}
	return nil
}

// taskFD installs the restorer's fd own in the task with an injected
// pidfd_open + pidfd_getfd and returns its number there (close-on-exec).
func (p *target) taskFD(own int) (uint64, error) {
	pidfd, err := p.sys(p.pid, unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
	if err != nil {
		return 0, err
	}
	fd, err := p.sys(p.pid, unix.SYS_PIDFD_GETFD, pidfd, uint64(own), 0)
	p.sys(p.pid, unix.SYS_CLOSE, pidfd)
	return fd, err
}
