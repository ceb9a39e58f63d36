package dumper

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ckptfs/ckptfs/image"
)

// A SysV shared memory segment is reached by the vmas attaching it (its
// /SYSV<key> vma's inode is the shmid), never by an fd: collectShm
// (shm.go) finds it, sysvObject records it from /proc/sysvipc/shm. It has
// no entry in the kinds table.

// isSysV reports a vma attaching a SysV shared memory segment.
func isSysV(v *image.VMA) bool {
	return v.Kind == image.VMAShmem && strings.HasPrefix(v.Name, "/SYSV")
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
	o := &image.SysVShm{Key: s.key, ShmID: s.id, Size: s.size, Mode: s.mode & 0o777, Dest: s.mode&shmDest != 0,
		UID: s.uid, GID: s.gid, CUID: s.cuid, CGID: s.cgid, Dev: dev, DataRanges: ranges}
	return &image.Object{ID: image.SysVID(s.id), Kind: image.ObjSysVShm, Info: o.Info(), Data: data}, nil
}
