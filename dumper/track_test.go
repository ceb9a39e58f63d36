package dumper

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/wptrack"
)

func hashOf(b byte) image.Hash {
	var h image.Hash
	h[0] = b
	return h
}

// TestTrackChoose: written pages are read, unwritten ones keep the
// previous checkpoint's hash or stay holes, pages no vma of the same
// mapping covered are read; the zero page and the file's pages are holes.
func TestTrackChoose(t *testing.T) {
	const pg = image.PageSize
	// The previous checkpoint: an anonymous vma split in two, its pages 0,
	// 2 and 5 saved (1, 3, 4 were zero or absent); a file mapping.
	prev := &image.Task{PID: 7, VMAs: []*image.VMA{
		{Start: 0x10000, End: 0x10000 + 3*pg, Perms: "rw-p", Kind: image.VMAAnon,
			Pages: []image.PageRef{{Index: 0, Hash: hashOf(1)}, {Index: 2, Hash: hashOf(2)}}},
		{Start: 0x10000 + 3*pg, End: 0x10000 + 6*pg, Perms: "rw-p", Kind: image.VMAAnon,
			Pages: []image.PageRef{{Index: 2, Hash: hashOf(5)}}},
		{Start: 0x40000, End: 0x40000 + 4*pg, Perms: "rw-p", Kind: image.VMAFile, Name: "/lib/x", Inode: 9, Offset: 0x1000,
			Pages: []image.PageRef{{Index: 1, Hash: hashOf(9)}, {Index: 3, Hash: hashOf(8)}}},
	}}
	// Now: one vma over the same 6 pages plus 2 more, page 2 written, page
	// 7 the zero page; the file vma as it was.
	v := &image.VMA{Start: 0x10000, End: 0x10000 + 8*pg, Perms: "rw-p", Kind: image.VMAAnon}
	f := &image.VMA{Start: 0x40000, End: 0x40000 + 4*pg, Perms: "rw-p", Kind: image.VMAFile, Name: "/lib/x", Inode: 9, Offset: 0x1000}
	tt := &taskTrack{pid: 7, prev: prev,
		written: map[*image.VMA][]bool{v: {false, false, true, false, false, false, false, false}, f: make([]bool, 4)},
		reused:  map[*image.VMA][]reuseRun{}}
	tr := &Tracking{tasks: map[int]*taskTrack{7: tt}, report: &TrackReport{}}
	present := func(a, b uint64, cat uint64) wptrack.Region { return wptrack.Region{Start: a, End: b, Categories: cat} }
	got := tr.choose(tt, v, []wptrack.Region{
		present(v.Start, v.Start+3*pg, wptrack.PagePresent),
		present(v.Start+4*pg, v.Start+7*pg, wptrack.PagePresent),
		present(v.Start+7*pg, v.End, wptrack.PagePresent|wptrack.PagePFNZero),
	})
	if want := []uint32{2, 6}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	wantRefs := []image.PageRef{{Index: 0, Hash: hashOf(1)}, {Index: 5, Hash: hashOf(5)}}
	if got := runsOf(tt.reused[v]); !slices.Equal(got, wantRefs) {
		t.Fatalf("kept %v, want %v", got, wantRefs)
	}
	// File mapping: page 0 the file's, 1 kept, 2 swapped (or a marker): read.
	got = tr.choose(tt, f, []wptrack.Region{
		present(f.Start, f.Start+pg, wptrack.PagePresent|wptrack.PageFile),
		present(f.Start+pg, f.Start+2*pg, wptrack.PagePresent),
		present(f.Start+2*pg, f.Start+3*pg, wptrack.PageSwapped),
	})
	if kept := runsOf(tt.reused[f]); !slices.Equal(got, []uint32{2}) || !slices.Equal(kept, []image.PageRef{{Index: 1, Hash: hashOf(9)}}) {
		t.Fatalf("file vma: read %v kept %v, want [2] and page 1", got, kept)
	}
	// Moved to another offset: not the same mapping, read.
	f.Offset = 0x2000
	tt.reused[f] = nil
	if got := tr.choose(tt, f, []wptrack.Region{present(f.Start+pg, f.Start+2*pg, wptrack.PagePresent)}); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("file vma at another offset: read %v, want [1]", got)
	}
	// The copied pages and the kept ones, merged in index order.
	v.Pages = []image.PageRef{{Index: 2, Hash: hashOf(3)}, {Index: 6, Hash: hashOf(4)}}
	delete(tt.reused, f)
	var st image.Stats
	if err := tr.addReused(&st); err != nil {
		t.Fatal(err)
	}
	want := []image.PageRef{{Index: 0, Hash: hashOf(1)}, {Index: 2, Hash: hashOf(3)}, {Index: 5, Hash: hashOf(5)}, {Index: 6, Hash: hashOf(4)}}
	if !slices.Equal(v.Pages, want) || st.PagesTotal != 2 {
		t.Fatalf("page table %v (+%d), want %v (+2)", v.Pages, st.PagesTotal, want)
	}
}

// runsOf joins the references of in-memory runs.
func runsOf(runs []reuseRun) []image.PageRef {
	var all [][]image.PageRef
	for _, r := range runs {
		all = append(all, r.refs)
	}
	return mergeRuns(nil, all)
}

// countingSource counts the page-table values read.
type countingSource struct {
	dedup.TableSource
	reads int
}

func (c *countingSource) TableValue(h image.Hash) ([]byte, error) {
	c.reads++
	return c.TableSource.TableValue(h)
}

// TestTrackTabulate: a tracked vma's table built from the previous
// checkpoint's stored table (chunks taken by hash where no page was
// written and the layout is kept, the others read) is the table of the
// merged references, for a dense previous table, a sparse one, one that
// started lower, and a vma that grew.
func TestTrackTabulate(t *testing.T) {
	const pg = image.PageSize
	s, err := dedup.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hash := func(gen, i uint32) image.Hash {
		var h image.Hash
		binary.LittleEndian.PutUint32(h[:], i)
		binary.LittleEndian.PutUint32(h[4:], gen)
		return h
	}
	// stored builds a previous vma [start, start+n pages) with a table
	// of the pages idx says, stored in s.
	stored := func(start uint64, n uint32, idx func(i uint32) bool) *image.VMA {
		pv := &image.VMA{Start: start, End: start + uint64(n)*pg, Perms: "rw-p", Kind: image.VMAAnon}
		b := dedup.NewTableBuilder(s)
		for i := range n {
			if idx(i) {
				if err := b.Add(pv, image.PageRef{Index: i, Hash: hash(1, i)}); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := b.Finish(); err != nil {
			t.Fatal(err)
		}
		return pv
	}
	all := func(uint32) bool { return true }
	for _, tc := range []struct {
		name    string
		pv      *image.VMA
		v       *image.VMA
		written []uint32 // pages of v copied (new hashes)
		reads   int      // table values read at most
	}{
		{"dense", stored(0x100000, 1000, all), &image.VMA{Start: 0x100000, End: 0x100000 + 1000*pg}, []uint32{5, 600}, 3},
		{"dense, none written", stored(0x200000, 1000, all), &image.VMA{Start: 0x200000, End: 0x200000 + 1000*pg}, nil, 1},
		{"dense, last page written", stored(0x300000, 1000, all), &image.VMA{Start: 0x300000, End: 0x300000 + 1000*pg}, []uint32{999}, 2},
		{"sparse", stored(0x400000, 1000, func(i uint32) bool { return i%3 != 0 }), &image.VMA{Start: 0x400000, End: 0x400000 + 1000*pg}, []uint32{7, 900}, 100},
		{"started lower", stored(0x500000, 600, all), &image.VMA{Start: 0x500000 - 10*pg, End: 0x500000 + 600*pg}, []uint32{0, 1, 300}, 100},
		{"grew", stored(0x600000, 1000, all), &image.VMA{Start: 0x600000, End: 0x600000 + 1100*pg}, []uint32{10, 1000, 1050}, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pv, v := tc.pv, tc.v
			v.Perms, v.Kind = "rw-p", image.VMAAnon
			prevRefs, err := (&Tracking{src: s}).loadAllCopy(pv)
			if err != nil {
				t.Fatal(err)
			}
			shift := (int64(pv.Start) - int64(v.Start)) / pg
			old := map[uint32]image.Hash{}
			for _, r := range prevRefs {
				old[uint32(int64(r.Index)+shift)] = r.Hash
			}
			// The expected table: the previous pages, the written ones
			// with their new hash.
			var want []image.PageRef
			written := map[uint32]bool{}
			for _, i := range tc.written {
				written[i] = true
			}
			n := uint32((v.End - v.Start) / pg)
			var runs []reuseRun
			var copied []image.PageRef
			for i := uint32(0); i < n; i++ {
				switch h, ok := old[i]; {
				case written[i]:
					copied = append(copied, image.PageRef{Index: i, Hash: hash(2, i)})
					want = append(want, copied[len(copied)-1])
				case ok:
					want = append(want, image.PageRef{Index: i, Hash: h})
				}
			}
			// The runs choose makes: the unwritten stretches inside pv.
			a := max(pv.Start, v.Start)
			for i := uint32((a - v.Start) / pg); i < n; {
				addr := v.Start + uint64(i)*pg
				if written[i] || addr >= pv.End {
					i++
					continue
				}
				j := i
				for j < n && !written[j] && v.Start+uint64(j)*pg < pv.End {
					j++
				}
				runs = append(runs, reuseRun{pv: pv, from: addr, to: v.Start + uint64(j)*pg})
				i = j
			}
			src := &countingSource{TableSource: s}
			tr := &Tracking{src: src}
			v.Pages = copied
			b := dedup.NewTableBuilder(s)
			got, err := tr.tabulate(b, v, runs)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Finish(); err != nil {
				t.Fatal(err)
			}
			if got != len(want)-len(copied) {
				t.Errorf("%d references reused, want %d", got, len(want)-len(copied))
			}
			if src.reads > tc.reads {
				t.Errorf("%d table values read, want at most %d", src.reads, tc.reads)
			}
			wv := &image.VMA{Start: v.Start, End: v.End, Perms: v.Perms, Kind: v.Kind}
			wb := dedup.NewTableBuilder(s)
			for _, r := range want {
				if err := wb.Add(wv, r); err != nil {
					t.Fatal(err)
				}
			}
			if err := wb.Finish(); err != nil {
				t.Fatal(err)
			}
			if v.Table == nil || v.Table.Pages != wv.Table.Pages || !slices.Equal(v.Table.Top, wv.Table.Top) {
				t.Fatalf("table %+v, want %+v", v.Table, wv.Table)
			}
			// And it reads back as those references.
			back, err := tr.loadAllCopy(v)
			if err != nil || !slices.Equal(back, want) {
				t.Fatalf("table reads back as %d references (%v), want %d", len(back), err, len(want))
			}
		})
	}
}

// loadAllCopy reads the stored table of v without changing v.
func (t *Tracking) loadAllCopy(v *image.VMA) ([]image.PageRef, error) {
	c := *v
	if err := t.loadAll(&c); err != nil {
		return nil, err
	}
	return c.Pages, nil
}
