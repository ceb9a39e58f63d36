package dumper

import (
	"fmt"
	"os"
	"strconv"
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

// isMemfd reports an fd on a memfd ("/memfd:<name> (deleted)").
func isMemfd(f *image.FD) bool {
	return f.Kind == image.FDFile && f.Deleted && strings.HasPrefix(f.Path, "/memfd:")
}

// isSysV reports a vma attaching a SysV shared memory segment.
func isSysV(v *image.VMA) bool {
	return v.Kind == image.VMAShmem && strings.HasPrefix(v.Name, "/SYSV")
}

// sysvID names the object of SysV segment shmid.
func sysvID(shmid int) string { return "sysv-" + strconv.Itoa(shmid) }

// memfdID names the object of the memfd with inode ino.
func memfdID(ino uint64) string { return "memfd-" + strconv.FormatUint(ino, 10) }

// addMemfd records the memfd that fd f of pid refers to.
func addMemfd(c *image.Checkpoint, pid int, f *image.FD) error {
	f.Object = memfdID(f.Ino)
	if c.Object(f.Object) != nil {
		return nil
	}
	o, err := memfdObject(c, proc.FDPath(pid, f.Num), strings.TrimPrefix(f.Path, "/memfd:"))
	if err != nil {
		return fmt.Errorf("memfd %s: %w", f.Path, err)
	}
	c.Objects = append(c.Objects, o)
	return nil
}

// memfdObject reads the memfd at path (an fd or map_files link of a task).
func memfdObject(c *image.Checkpoint, path, name string) (*image.Object, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(file.Fd()), &st); err != nil {
		return nil, err
	}
	seals, err := unix.FcntlInt(file.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("F_GET_SEALS: %w", err)
	}
	dev := mapsDev(st.Dev)
	ranges, data, err := unmappedData(c, dev, st.Ino, file, st.Size)
	if err != nil {
		return nil, err
	}
	return &image.Object{ID: memfdID(st.Ino), Kind: image.ObjMemfd, Data: data, Info: []string{
		image.TextLine("name", name),
		"size: " + strconv.FormatInt(st.Size, 10),
		"mode: " + strconv.FormatUint(uint64(st.Mode&0o7777), 8),
		"seals: " + fmt.Sprintf("%#x", seals),
		"dev: " + dev,
		"ino: " + strconv.FormatUint(st.Ino, 10),
		"data_ranges: " + formatRanges(ranges),
	}}, nil
}

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
				if c.Object(memfdID(v.Inode)) != nil {
					continue
				}
				name := strings.TrimSuffix(strings.TrimPrefix(v.Name, "/memfd:"), " (deleted)")
				o, err := memfdObject(c, mapPath, name)
				if err != nil {
					return fmt.Errorf("process %d vma %s (%s): %w", t.PID, v.DirName(), v.Name, err)
				}
				c.Objects = append(c.Objects, o)
			case isSysV(v):
				id := sysvID(int(v.Inode))
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

// sysvSeg is one line of /proc/sysvipc/shm.
type sysvSeg struct {
	key                  int32
	id                   int
	mode                 uint32 // permissions with SHM_DEST (01000), SHM_LOCKED (02000)
	size                 uint64
	uid, gid, cuid, cgid uint32
}

// readSysV parses /proc/sysvipc/shm:
// key shmid perms size cpid lpid nattch uid gid cuid cgid atime dtime ctime rss swap.
func readSysV() (map[int]sysvSeg, error) {
	b, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return nil, err
	}
	out := map[int]sysvSeg{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 11 {
			continue
		}
		var s sysvSeg
		n := make([]uint64, 11)
		for i, x := range f[:11] {
			base := 10
			if i == 2 {
				base = 8
			}
			if i == 0 {
				k, err := strconv.ParseInt(x, 10, 32)
				if err != nil {
					return nil, fmt.Errorf("/proc/sysvipc/shm: bad key %q", x)
				}
				s.key = int32(k)
				continue
			}
			if n[i], err = strconv.ParseUint(x, base, 64); err != nil {
				return nil, fmt.Errorf("/proc/sysvipc/shm: bad field %q", x)
			}
		}
		s.id, s.mode, s.size = int(n[1]), uint32(n[2]), n[3]
		s.uid, s.gid, s.cuid, s.cgid = uint32(n[7]), uint32(n[8]), uint32(n[9]), uint32(n[10])
		out[s.id] = s
	}
	return out, nil
}

const shmDest = 0o1000 // SHM_DEST: marked IPC_RMID, destroyed at the last detach

func sysvObject(c *image.Checkpoint, s sysvSeg, mapPath, dev string) (*image.Object, error) {
	file, err := os.Open(mapPath)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	ranges, data, err := unmappedData(c, dev, uint64(s.id), file, int64(s.size))
	if err != nil {
		return nil, err
	}
	dest := "0"
	if s.mode&shmDest != 0 {
		dest = "1"
	}
	return &image.Object{ID: sysvID(s.id), Kind: image.ObjSysVShm, Data: data, Info: []string{
		"key: " + fmt.Sprintf("%#08x", uint32(s.key)),
		"shmid: " + strconv.Itoa(s.id),
		"size: " + strconv.FormatUint(s.size, 10),
		"mode: " + strconv.FormatUint(uint64(s.mode&0o777), 8),
		"dest: " + dest,
		"uid: " + strconv.FormatUint(uint64(s.uid), 10),
		"gid: " + strconv.FormatUint(uint64(s.gid), 10),
		"cuid: " + strconv.FormatUint(uint64(s.cuid), 10),
		"cgid: " + strconv.FormatUint(uint64(s.cgid), 10),
		"dev: " + dev,
		"data_ranges: " + formatRanges(ranges),
	}}, nil
}

// mapsDev formats a device number as /proc/<pid>/maps does ("00:01").
func mapsDev(dev uint64) string {
	return fmt.Sprintf("%02x:%02x", unix.Major(dev), unix.Minor(dev))
}

// unmappedData returns the non-zero pages of the shared memory file that
// no vma (dev, ino) of the checkpoint has in its page tables, as byte
// ranges of the file and their contents one after another.
func unmappedData(c *image.Checkpoint, dev string, ino uint64, file *os.File, size int64) ([][2]int64, []byte, error) {
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
	var ranges [][2]int64
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
			if l := len(ranges); l > 0 && ranges[l-1][1] == p {
				ranges[l-1][1] = p + int64(n)
			} else {
				ranges = append(ranges, [2]int64{p, p + int64(n)})
			}
			data = append(data, b...)
		}
	}
	return ranges, data, nil
}

// formatRanges writes byte ranges as "start-end ..." (decimal), "" if none.
func formatRanges(rs [][2]int64) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d-%d", r[0], r[1])
	}
	return b.String()
}
