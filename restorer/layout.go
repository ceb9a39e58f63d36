package restorer

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// area is a named address range.
type area struct {
	name       string
	start, end uint64
}

func (a area) size() uint64 { return a.end - a.start }

func isVdsoName(name string) bool {
	return name == "[vdso]" || strings.HasPrefix(name, "[vvar")
}

// vdsoUnit returns the vdso and vvar areas of a maps listing, ascending.
func vdsoUnit(ms []proc.Mapping) []area {
	var out []area
	for _, m := range ms {
		if isVdsoName(m.Name) {
			out = append(out, area{m.Name, m.Start, m.End})
		}
	}
	return out
}

func recordedVdso(t *image.Task) []area {
	var out []area
	for _, v := range t.VMAs {
		if v.Kind == image.VMAVdso || v.Kind == image.VMAVvar {
			out = append(out, area{v.Name, v.Start, v.End})
		}
	}
	return out
}

// sameShape reports whether two vdso units have the same areas, sizes and
// distances, so that one can be moved onto the other.
func sameShape(a, b []area) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].name != b[i].name || a[i].size() != b[i].size() || a[i].start-a[0].start != b[i].start-b[0].start {
			return false
		}
	}
	return true
}

func fmtUnit(u []area) string {
	var s []string
	for _, a := range u {
		s = append(s, fmt.Sprintf("%s+%#x:%#x", a.name, a.start-u[0].start, a.size()))
	}
	return strings.Join(s, " ")
}

// ownVdso is this process's vdso unit, read once: preflight checks every
// task against it, and /proc/self/maps of a Go process is long.
var ownVdso = sync.OnceValues(func() ([]area, error) {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	ms, err := proc.ParseMaps(b)
	if err != nil {
		return nil, err
	}
	return vdsoUnit(ms), nil
})

func checkVdso(t *image.Task) error {
	rec := recordedVdso(t)
	if len(rec) == 0 {
		return nil
	}
	cur, err := ownVdso()
	if err != nil {
		return err
	}
	if !sameShape(rec, cur) {
		return fmt.Errorf("task %d: checkpoint needs a vdso layout this kernel lacks: recorded %s, this kernel %s",
			t.PID, fmtUnit(rec), fmtUnit(cur))
	}
	return nil
}

// Address bounds for scratch placements.
const (
	lowAddr  = 0x100000000    // 4 GiB: above small static binaries
	highAddr = 0x7ff000000000 // below the stack region
)

// findFree returns a size-byte, page-aligned range overlapping none of avoid.
func findFree(size uint64, avoid []area) (uint64, error) {
	sort.Slice(avoid, func(i, j int) bool { return avoid[i].start < avoid[j].start })
	cand := uint64(lowAddr)
	for _, a := range avoid {
		if a.end <= cand {
			continue
		}
		if a.start >= cand+size {
			break
		}
		cand = (a.end + 0xfff) &^ 0xfff
	}
	if cand+size > highAddr {
		return 0, fmt.Errorf("no free %#x-byte range in the address space", size)
	}
	return cand, nil
}

func mappingAreas(ms []proc.Mapping) []area {
	out := make([]area, 0, len(ms))
	for _, m := range ms {
		out = append(out, area{m.Name, m.Start, m.End})
	}
	return out
}

func vmaAreas(vs []*image.VMA) []area {
	out := make([]area, 0, len(vs))
	for _, v := range vs {
		out = append(out, area{v.Name, v.Start, v.End})
	}
	return out
}
