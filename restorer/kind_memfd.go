package restorer

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// memfdKind is a memfd (object memfd-<ino>), made once with its name,
// size, mode and the pages no vma holds, then every fd is reopened from it
// with its own flags and offset; the vmas that map it map the same memfd
// (shmem.go), and its seals are added after the last of them.
type memfdKind struct{ kindBase }

func (memfdKind) open(fs *files, c *image.Checkpoint, _ *image.Task, f *image.FD) (int, error) {
	o := c.Object(f.Object)
	base, err := fs.memfd(c, o)
	if err != nil {
		return -1, err
	}
	return fs.reopen(o, base, f, true)
}

// memfd returns the restorer's fd on memfd object o, creating it on first
// use with its name, size, mode and the pages no vma holds (its data).
// Its seals are added after the last vma that maps it is mapped
// (shmemMapped), or here when no vma maps it.
func (fs *files) memfd(c *image.Checkpoint, o *image.Object) (int, error) {
	if fd, ok := fs.objs[o.ID]; ok {
		return fd, nil
	}
	m, err := image.ParseMemfd(o, false)
	if err != nil {
		return -1, err
	}
	size, seals := m.Size, memfdSeals(m)
	flags := unix.MFD_CLOEXEC
	if seals != unix.F_SEAL_SEAL {
		flags |= unix.MFD_ALLOW_SEALING
	}
	name := m.Name
	if name == "" {
		name = "ckptfs-memfd"
	}
	fd, err := unix.MemfdCreate(name, flags)
	if err != nil {
		return -1, fmt.Errorf("memfd %s: memfd_create: %w", o.ID, err)
	}
	fs.keep(fd)
	if err := unix.Ftruncate(fd, size); err != nil {
		return -1, fmt.Errorf("memfd %s: ftruncate %d: %w", o.ID, size, err)
	}
	if err := unix.Fchmod(fd, m.Mode); err != nil {
		return -1, fmt.Errorf("memfd %s: chmod %o: %w", o.ID, m.Mode, err)
	}
	if err := writeObjectData(o, m.DataRanges, func(b []byte, off int64) error {
		_, err := unix.Pwrite(fd, b, off)
		return err
	}); err != nil {
		return -1, err
	}
	fs.objs[o.ID] = fd
	mapped := false
	for _, t := range c.Tasks {
		for _, v := range t.VMAs {
			mapped = mapped || isShmem(v) && memfdOf(c, v) == o
		}
	}
	if !mapped {
		if err := addSeals(fd, o); err != nil {
			return -1, err
		}
	}
	return fd, nil
}

// memfdSeals returns the seals to add to memfd m: F_SEAL_SEAL alone for
// a memfd created without MFD_ALLOW_SEALING (as F_GET_SEALS says).
func memfdSeals(m *image.Memfd) int { return int(m.Seals) }

// addSeals adds the recorded seals of memfd o to fd.
func addSeals(fd int, o *image.Object) error {
	m, err := image.ParseMemfd(o, false)
	if err != nil {
		return err
	}
	seals := memfdSeals(m)
	if seals == unix.F_SEAL_SEAL {
		return nil // F_SEAL_SEAL alone: created without MFD_ALLOW_SEALING
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		return fmt.Errorf("memfd %s: add seals %#x: %w", o.ID, seals, err)
	}
	return nil
}

// writeObjectData hands each of o's data ranges, with its bytes from
// o.Data (Load checked they add up), to write.
func writeObjectData(o *image.Object, ranges []image.DataRange, write func(b []byte, off int64) error) error {
	data := o.Data
	for _, r := range ranges {
		n := r.End - r.Start
		if n < 0 || int64(len(data)) < n {
			return fmt.Errorf("%s: bad data range %d-%d (or data shorter than its ranges)", o.ID, r.Start, r.End)
		}
		if err := write(data[:n], r.Start); err != nil {
			return fmt.Errorf("%s: write %d bytes at %d: %w", o.ID, n, r.Start, err)
		}
		data = data[n:]
	}
	return nil
}
