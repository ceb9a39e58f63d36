package image

import (
	"bytes"
	"fmt"
	"testing"
)

// TestRenderPagemapFormat: the pagemap is "%#x %s\n" per page, as
// docs/tree-format.md says, at low and high addresses.
func TestRenderPagemapFormat(t *testing.T) {
	for _, start := range []uint64{0, 0x1000, 0x7f46e5400000, 0xffffffffff600000} {
		v := &VMA{Start: start, End: start + 3*PageSize}
		v.Pages = []PageRef{{Index: 0, Hash: Hash{1, 2, 0xab}}, {Index: 2, Hash: Hash{0xff, 31: 0x0f}}}
		var want []byte
		for _, p := range v.Pages {
			want = fmt.Appendf(want, "%#x %s\n", v.Start+uint64(p.Index)*PageSize, p.Hash)
		}
		if got := renderPagemap(v); !bytes.Equal(got, want) {
			t.Errorf("start %#x: got %q, want %q", start, got, want)
		}
	}
}
