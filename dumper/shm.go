package dumper

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/sparse"
)

// Shared memory identity. A memfd is one object whether a task holds an fd
// on it, maps it, or both: objects/memfd-<ino> records its name, size,
// mode and seals, and the restorer creates one memfd that the fds are
// opened on and the vmas map. A SysV segment is objects/sysv-<shmid> with
// its key, id, size, mode and owner (from /proc/sysvipc/shm, matched by
// the inode of the /SYSV vma, which is the shmid), restored as the same
// segment and attached with shmat.
//
// Contents are saved once: pages mapped in some task are the vmas' pages
// (dedup store); the pages of the object no task has in its page tables
// (written through the fd, never faulted in, swapped out) are the object's
// data, listed by its data_ranges line.

// collectShm records the shared memory objects that vmas map: memfds no fd
// of the tree holds (mapped shared, or private: a private mapping's pages
// that are still the file's are the file's data), and SysV segments.
func collectShm(c *image.Checkpoint) error {
	var segs map[int]sysvSeg
	for _, t := range c.Tasks {
		for _, v := range t.VMAs {
			if !(v.Kind == image.VMAShmem && v.Shared() || v.Kind == image.VMAFile && strings.HasPrefix(v.Name, "/memfd:")) {
				continue
			}
			mapPath := fmt.Sprintf("/proc/%d/map_files/%x-%x", t.PID, v.Start, v.End)
			switch {
			case strings.HasPrefix(v.Name, "/memfd:"):
				if c.Object(image.MemfdID(v.Inode)) != nil {
					continue
				}
				if c.Object(image.DeletedFileID(v.Inode)) != nil {
					// Recorded as a memfd (deletedAsMemfd), yet an fd holds it.
					return &ErrUnsupported{PID: t.PID, FD: -1, Kind: "a deleted file both mapped and held by an fd, which would come back as two files: close the fd or keep the file linked until the dump", What: v.Name}
				}
				name := strings.TrimSuffix(strings.TrimPrefix(v.Name, "/memfd:"), " (deleted)")
				o, err := memfdObject(c, mapPath, name)
				if err != nil {
					return fmt.Errorf("process %d vma %s (%s): %w", t.PID, v.DirName(), v.Name, err)
				}
				c.Objects = append(c.Objects, o)
			case isSysV(v):
				id := image.SysVID(int(v.Inode))
				if c.Object(id) != nil {
					continue
				}
				if segs == nil {
					var err error
					if segs, err = readSysV(); err != nil {
						return err
					}
				}
				s, ok := segs[int(v.Inode)]
				if !ok {
					return &ErrUnsupported{PID: t.PID, FD: -1, Kind: "a SysV segment not in /proc/sysvipc/shm (another IPC namespace?)", What: v.Name}
				}
				o, err := sysvObject(c, s, mapPath, v.Dev)
				if err != nil {
					return fmt.Errorf("process %d vma %s (%s): %w", t.PID, v.DirName(), v.Name, err)
				}
				c.Objects = append(c.Objects, o)
			}
		}
	}
	return nil
}

// mapsDev formats a device number as /proc/<pid>/maps does ("00:01").
func mapsDev(dev uint64) string {
	return fmt.Sprintf("%02x:%02x", unix.Major(dev), unix.Minor(dev))
}

// unmappedData returns the non-zero pages of the shared memory file that
// no vma (dev, ino) of the checkpoint has in its page tables, as byte
// ranges of the file and their contents one after another.
func unmappedData(c *image.Checkpoint, dev string, ino uint64, file *os.File, size int64) ([]image.DataRange, []byte, error) {
	mapped := map[int64]bool{} // file page index -> in some task's page tables
	var entries []uint64
	for _, t := range c.Tasks {
		var pm *proc.Pagemap
		for _, v := range t.VMAs {
			if v.Kind != image.VMAShmem || !v.Shared() || v.Inode != ino || v.Dev != dev {
				continue
			}
			if pm == nil {
				var err error
				if pm, err = proc.OpenPagemap(t.PID); err != nil {
					return nil, nil, err
				}
				defer pm.Close()
			}
			var err error
			if entries, err = pm.Entries(v.Start, v.End, entries); err != nil {
				return nil, nil, fmt.Errorf("process %d vma %s: %w", t.PID, v.DirName(), err)
			}
			for i, e := range entries {
				if e&(proc.PMPresent|proc.PMSwapped) != 0 {
					mapped[int64(v.Offset/image.PageSize)+int64(i)] = true
				}
			}
		}
	}
	var ranges []image.DataRange
	var data []byte
	page := make([]byte, image.PageSize)
	for e, err := range sparse.Data(int(file.Fd()), 0, size) {
		if err != nil {
			return nil, nil, err
		}
		for p := e.Start &^ (image.PageSize - 1); p < e.End; p += image.PageSize {
			if mapped[p/image.PageSize] {
				continue
			}
			n, err := file.ReadAt(page, p)
			if n == 0 && err != nil {
				return nil, nil, fmt.Errorf("read at %d: %w", p, err)
			}
			b := page[:n]
			if dedup.IsZero(b) {
				continue
			}
			if len(data) > maxDeletedFile {
				return nil, nil, fmt.Errorf("more than %d MiB of shared memory that no task maps", maxDeletedFile>>20)
			}
			if l := len(ranges); l > 0 && ranges[l-1].End == p {
				ranges[l-1].End = p + int64(n)
			} else {
				ranges = append(ranges, image.DataRange{Start: p, End: p + int64(n)})
			}
			data = append(data, b...)
		}
	}
	return ranges, data, nil
}
