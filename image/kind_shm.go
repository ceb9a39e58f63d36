package image

import (
	"fmt"
	"strconv"
	"strings"
)

// DataRange is a byte range [Start, End) of a shared memory object that
// its object's data fills (the pages no vma holds).
type DataRange struct {
	Start, End int64
}

// formatRanges writes ranges as "start-end ..." (decimal), "" if none.
func formatRanges(rs []DataRange) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d-%d", r.Start, r.End)
	}
	return b.String()
}

// parseRanges reads data_ranges: ascending, not overlapping, inside size,
// their lengths adding up to the data's.
func (k *kindLines) ranges(key string, size int64, data int) []DataRange {
	var out []DataRange
	total := int64(0)
	prev := int64(0)
	for _, r := range strings.Fields(k.str(key)) {
		a, b, ok := strings.Cut(r, "-")
		s, err1 := strconv.ParseInt(a, 10, 64)
		e, err2 := strconv.ParseInt(b, 10, 64)
		if !ok || err1 != nil || err2 != nil || s < prev || e <= s || e > size {
			k.fail("%s: bad range %.40q", key, r)
			return nil
		}
		out = append(out, DataRange{s, e})
		total += e - s
		prev = e
	}
	if k.err == nil && total != int64(data) {
		k.fail("%s: ranges of %d bytes, data of %d", key, total, data)
	}
	return out
}

// Memfd is the info of a memfd (objects/memfd-<ino>), reached by fds on it
// or vmas mapping it (matched by Dev and Ino, the maps columns); its data
// are the pages no vma holds, at DataRanges.
type Memfd struct {
	Name       string // memfd_create's name, without "memfd:"
	Size       int64
	Mode       uint32 // permission bits
	Seals      uint32 // F_GET_SEALS
	Dev        string // "00:01" as in maps
	Ino        uint64
	DataRanges []DataRange
}

// MemfdID names the object of the memfd with inode ino.
func MemfdID(ino uint64) string { return "memfd-" + u64(ino) }

// Info renders m as its info lines.
func (m *Memfd) Info() []string {
	var w lineWriter
	w.text("name", m.Name)
	w.add("size", "%d", m.Size)
	w.add("mode", "%o", m.Mode)
	w.add("seals", "%#x", m.Seals)
	w.add("dev", "%s", m.Dev)
	w.add("ino", "%d", m.Ino)
	w.add("data_ranges", "%s", formatRanges(m.DataRanges))
	return w
}

// Maps reports whether vma v maps m.
func (m *Memfd) Maps(v *VMA) bool {
	return v.Inode == m.Ino && v.Dev == m.Dev && strings.HasPrefix(v.Name, "/memfd:")
}

// ParseMemfd reads the info of memfd object o (its data too).
func ParseMemfd(o *Object, strict bool) (*Memfd, error) {
	k := readKindLines("object "+o.ID, o.Info, []string{"name", "size", "mode", "seals", "dev", "ino", "data_ranges"}, nil, strict)
	m := &Memfd{Name: k.textReq("name"), Size: k.int("size", 0, 1<<46), Mode: uint32(k.uint("mode", 8, 32)),
		Seals: uint32(k.uint("seals", 0, 32)), Dev: k.str("dev"), Ino: k.uint("ino", 10, 64)}
	if k.err == nil && !validDev(m.Dev) {
		k.fail("dev %.20q is not major:minor in hex", m.Dev)
	}
	if k.err == nil && m.Mode&^0o7777 != 0 {
		k.fail("mode %o has more than permission bits", m.Mode)
	}
	if k.err == nil {
		m.DataRanges = k.ranges("data_ranges", m.Size, len(o.Data))
	}
	return m, k.err
}

func parseMemfdInfo(o *Object, strict bool) ([]string, error) {
	m, err := ParseMemfd(o, strict)
	return m.Info(), err
}

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
