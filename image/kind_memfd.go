package image

import "strings"

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
