package dedup

import (
	"slices"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// valueSink is a TableWriter that keeps what it is given, or drops the
// value at drop (1-based; 0: none).
type valueSink struct {
	values [][]byte
	drop   int
	n      int
	next   TableWriter
}

func (w *valueSink) PutTables(values [][]byte) error {
	var kept [][]byte
	for _, v := range values {
		w.n++
		if w.n == w.drop {
			continue
		}
		kept = append(kept, append([]byte(nil), v...))
	}
	w.values = append(w.values, kept...)
	if w.next != nil {
		return w.next.PutTables(kept)
	}
	return nil
}

// tableVMA returns a vma of n references (every other index, hashes of
// their number) and a copy of them.
func tableVMA(start uint64, n int) (*image.VMA, []image.PageRef) {
	v := &image.VMA{Start: start, End: start + uint64(2*n+2)*image.PageSize, Perms: "rw-p", Kind: image.VMAAnon}
	var refs []image.PageRef
	for i := 0; i < n; i++ {
		refs = append(refs, image.PageRef{Index: uint32(2*i + 1), Hash: Sum([]byte{byte(i), byte(i >> 8), byte(i >> 16), byte(start >> 20)})})
	}
	return v, refs
}

// streamTables puts refs[i] into the table of vmas[i] through a builder.
func streamTables(t *testing.T, w TableWriter, vmas []*image.VMA, refs [][]image.PageRef) error {
	t.Helper()
	b := NewTableBuilder(w)
	for i, v := range vmas {
		for _, r := range refs[i] {
			if err := b.Add(v, r); err != nil {
				return err
			}
		}
	}
	return b.Finish()
}

// The builder makes exactly the values and top hashes tableValues makes
// of the same references: at a chunk's end, a chunk list piece's end
// (tableFanout chunks) and past it.
func TestTableBuilderMatchesTableValues(t *testing.T) {
	sizes := []int{1, tableChunk3, tableChunk3 + 1, tableChunk3 * tableFanout, tableChunk3*tableFanout + 300}
	var vmas []*image.VMA
	var refs [][]image.PageRef
	for i, n := range sizes {
		v, r := tableVMA(uint64(i+1)<<30, n)
		vmas, refs = append(vmas, v), append(refs, r)
	}
	var sink valueSink
	if err := streamTables(t, &sink, vmas, refs); err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	for i, v := range vmas {
		ref := &image.VMA{Pages: refs[i]}
		top, values := tableValues(ref, manifestFormat)
		want = append(want, values...)
		if v.Table == nil || v.Table.Pages != sizes[i] || !slices.Equal(v.Table.Top, top) || len(v.Pages) != 0 {
			t.Fatalf("vma of %d pages: table %+v, want %d pages, top %v", sizes[i], v.Table, sizes[i], top)
		}
	}
	sortValues := func(vs [][]byte) {
		slices.SortFunc(vs, func(a, b []byte) int { return strings.Compare(string(a), string(b)) })
	}
	sortValues(want)
	sortValues(sink.values)
	if !slices.EqualFunc(want, sink.values, slices.Equal) {
		t.Fatalf("builder wrote %d values, tableValues makes %d (or they differ)", len(sink.values), len(want))
	}
}

func TestTableBuilderRefusesDisorder(t *testing.T) {
	v, refs := tableVMA(1<<30, 3)
	w, _ := tableVMA(2<<30, 1)
	b := NewTableBuilder(&valueSink{})
	if err := b.Add(v, refs[1]); err != nil {
		t.Fatal(err)
	}
	if err := b.Add(v, refs[0]); err == nil {
		t.Fatal("a lower index after a higher one was taken")
	}
	b = NewTableBuilder(&valueSink{})
	for _, r := range []struct {
		v *image.VMA
		r image.PageRef
	}{{v, refs[0]}, {w, refs[0]}} {
		if err := b.Add(r.v, r.r); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Add(v, refs[2]); err == nil || !strings.Contains(err.Error(), "two runs") {
		t.Fatalf("a vma's second run: %v", err)
	}
}

// A checkpoint whose tables were streamed ahead of its commit, locally
// and through the store's socket, loads with the same references; its
// summary counts them; verify is clean.
func TestCommitStreamedTables(t *testing.T) {
	for _, remote := range []bool{false, true} {
		s := openT(t)
		var r Repo = s
		if remote {
			r = serveT(t, s)
		}
		c := dump(t, r, "base", []fakeVMA{{1, 0, 10}}) // real pages, to verify
		v1, refs1 := tableVMA(1<<30, tableChunk3*tableFanout+5)
		v2, refs2 := tableVMA(4<<30, 7)
		v2.Pages = nil
		if err := streamTables(t, r.(TableWriter), []*image.VMA{v1, v2}, [][]image.PageRef{refs1, refs2}); err != nil {
			t.Fatal(err)
		}
		pages := c.Tasks[0].VMAs[0].Pages // stored pages: one of the vmas is real
		c2 := &image.Checkpoint{Name: "streamed", Host: "h", Kernel: "k", RootPID: 100,
			Tasks: []*image.Task{{PID: 100, Comm: "t", State: "S", VMAs: []*image.VMA{
				{Start: 0x400000, End: 0x400000 + 12*image.PageSize, Perms: "rw-p", Kind: image.VMAAnon, Pages: pages}, v1, v2}}}}
		if err := r.Commit(c2); err != nil {
			t.Fatalf("remote %v: commit: %v", remote, err)
		}
		got, err := r.Load(c2.ID)
		if err != nil {
			t.Fatal(err)
		}
		vs := got.Tasks[0].VMAs
		if !slices.Equal(vs[0].Pages, pages) || !slices.Equal(vs[1].Pages, refs1) || !slices.Equal(vs[2].Pages, refs2) ||
			vs[1].Table != nil {
			t.Fatalf("remote %v: streamed tables loaded wrong", remote)
		}
		list, err := r.List()
		if err != nil {
			t.Fatal(err)
		}
		want := int64(len(pages)+len(refs1)+len(refs2)) * image.PageSize
		if sum := list[len(list)-1]; sum.ID != c2.ID || sum.MemoryBytes != want {
			t.Fatalf("summary %+v, want %d memory bytes", sum, want)
		}
	}
}

// A commit naming a streamed table that is not whole in the store (a
// chunk, or a chunk list piece, never arrived) fails and leaves no
// checkpoint.
func TestCommitRefusesIncompleteStreamedTable(t *testing.T) {
	for _, drop := range []int{1, tableFanout + 1} { // a chunk; the first piece
		s := openT(t)
		v, refs := tableVMA(1<<30, tableChunk3*tableFanout+1)
		sink := &valueSink{drop: drop, next: s}
		if err := streamTables(t, sink, []*image.VMA{v}, [][]image.PageRef{refs}); err != nil {
			t.Fatal(err)
		}
		c := &image.Checkpoint{Host: "h", RootPID: 1, Tasks: []*image.Task{{PID: 1, Comm: "t", State: "S", VMAs: []*image.VMA{v}}}}
		if err := s.Commit(c); err == nil || !strings.Contains(err.Error(), "page table") {
			t.Fatalf("drop %d: commit of an incomplete table: %v", drop, err)
		}
		if list, err := s.List(); err != nil || len(list) != 0 {
			t.Fatalf("drop %d: checkpoints %v (%v) after a failed commit", drop, list, err)
		}
	}
}
