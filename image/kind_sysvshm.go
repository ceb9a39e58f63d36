package image

import "strconv"

// SysVShm is the info of a SysV shared memory segment
// (objects/sysv-<shmid>), reached by the vmas attaching it (their inode is
// the shmid); its data are the pages no vma holds, at DataRanges.
type SysVShm struct {
	Key                  int32 // 0 (IPC_PRIVATE) once marked IPC_RMID
	ShmID                int
	Size                 uint64
	Mode                 uint32 // permission bits (0777)
	Dest                 bool   // marked IPC_RMID while attached (SHM_DEST)
	UID, GID, CUID, CGID uint32
	Dev                  string // "00:01" as in maps
	DataRanges           []DataRange
}

// SysVID names the object of SysV segment shmid.
func SysVID(shmid int) string { return "sysv-" + strconv.Itoa(shmid) }

// Info renders s as its info lines.
func (s *SysVShm) Info() []string {
	var w lineWriter
	w.add("key", "%#08x", uint32(s.Key))
	w.add("shmid", "%d", s.ShmID)
	w.add("size", "%d", s.Size)
	w.add("mode", "%o", s.Mode)
	w.add("dest", "%d", boolInt(s.Dest))
	w.add("uid", "%d", s.UID)
	w.add("gid", "%d", s.GID)
	w.add("cuid", "%d", s.CUID)
	w.add("cgid", "%d", s.CGID)
	w.add("dev", "%s", s.Dev)
	w.add("data_ranges", "%s", formatRanges(s.DataRanges))
	return w
}

// ParseSysVShm reads the info of SysV segment object o (its data too).
func ParseSysVShm(o *Object, strict bool) (*SysVShm, error) {
	k := readKindLines("object "+o.ID, o.Info, []string{"key", "shmid", "size", "mode", "dest", "uid", "gid", "cuid", "cgid", "dev", "data_ranges"}, nil, strict)
	s := &SysVShm{Key: int32(uint32(k.uint("key", 16, 32))), ShmID: int(k.int("shmid", 0, 1<<31-1)), Size: k.uint("size", 10, 46),
		Mode: uint32(k.uint("mode", 8, 32)), Dest: k.flag("dest"),
		UID: uint32(k.uint("uid", 10, 32)), GID: uint32(k.uint("gid", 10, 32)), CUID: uint32(k.uint("cuid", 10, 32)), CGID: uint32(k.uint("cgid", 10, 32)),
		Dev: k.str("dev")}
	k.str("dest")
	if k.err == nil && !validDev(s.Dev) {
		k.fail("dev %.20q is not major:minor in hex", s.Dev)
	}
	if k.err == nil && s.Mode&^0o777 != 0 {
		k.fail("mode %o has more than permission bits", s.Mode)
	}
	if k.err == nil {
		s.DataRanges = k.ranges("data_ranges", int64(s.Size), len(o.Data))
	}
	return s, k.err
}

func parseSysVInfo(o *Object, strict bool) ([]string, error) {
	s, err := ParseSysVShm(o, strict)
	return s.Info(), err
}
