package dumper

import (
	"slices"
	"testing"

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
		reused:  map[*image.VMA][][]image.PageRef{}}
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
	if got := joinRuns(tt.reused[v]); !slices.Equal(got, wantRefs) {
		t.Fatalf("kept %v, want %v", got, wantRefs)
	}
	// File mapping: page 0 the file's, 1 kept, 2 swapped (or a marker): read.
	got = tr.choose(tt, f, []wptrack.Region{
		present(f.Start, f.Start+pg, wptrack.PagePresent|wptrack.PageFile),
		present(f.Start+pg, f.Start+2*pg, wptrack.PagePresent),
		present(f.Start+2*pg, f.Start+3*pg, wptrack.PageSwapped),
	})
	if kept := joinRuns(tt.reused[f]); !slices.Equal(got, []uint32{2}) || !slices.Equal(kept, []image.PageRef{{Index: 1, Hash: hashOf(9)}}) {
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
	tr.addReused(&st)
	want := []image.PageRef{{Index: 0, Hash: hashOf(1)}, {Index: 2, Hash: hashOf(3)}, {Index: 5, Hash: hashOf(5)}, {Index: 6, Hash: hashOf(4)}}
	if !slices.Equal(v.Pages, want) || st.PagesTotal != 2 {
		t.Fatalf("page table %v (+%d), want %v (+2)", v.Pages, st.PagesTotal, want)
	}
}
