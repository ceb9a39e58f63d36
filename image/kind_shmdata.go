package image

import (
	"fmt"
	"strconv"
	"strings"
)

// The data of the shared memory kinds (kind_memfd.go, kind_sysvshm.go):
// the pages no vma holds, at data ranges.

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
