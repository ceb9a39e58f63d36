package dumper

import (
	"slices"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

func hashOf(b byte) image.Hash { var h image.Hash; h[0] = b; return h }

// TestTrackPick: written pages are read, unwritten ones keep the previous
// checkpoint's hash or stay holes, pages no vma of the same mapping
// covered are read.
func TestTrackPick(t *testing.T) {
	const pg = image.PageSize
	// The previous checkpoint: an anonymous vma split in two, pages 0, 2
	// and 5 saved (page 1, 3, 4 were zero or absent).
	prev := &image.Task{PID: 7, VMAs: []*image.VMA{
		{Start: 0x10000, End: 0x10000 + 3*pg, Perms: "rw-p", Kind: image.VMAAnon,
			Pages: []image.PageRef{{Index: 0, Hash: hashOf(1)}, {Index: 2, Hash: hashOf(2)}}},
		{Start: 0x10000 + 3*pg, End: 0x10000 + 6*pg, Perms: "rw-p", Kind: image.VMAAnon,
			Pages: []image.PageRef{{Index: 2, Hash: hashOf(5)}}},
		{Start: 0x40000, End: 0x40000 + 2*pg, Perms: "rw-p", Kind: image.VMAFile, Name: "/lib/x", Inode: 9, Offset: 0x1000,
			Pages: []image.PageRef{{Index: 1, Hash: hashOf(9)}}},
	}}
	// Now: one vma over the same 6 pages plus 2 more, page 2 written;
	// the file vma at another offset (not the same mapping any more).
	v := &image.VMA{Start: 0x10000, End: 0x10000 + 8*pg, Perms: "rw-p", Kind: image.VMAAnon}
	f := &image.VMA{Start: 0x40000, End: 0x40000 + 2*pg, Perms: "rw-p", Kind: image.VMAFile, Name: "/lib/x", Inode: 9, Offset: 0x2000}
	tt := &taskTrack{pid: 7, prev: prev,
		written: map[*image.VMA][]bool{v: {false, false, true, false, false, false, false, false}, f: {false, false}},
		reused:  map[*image.VMA][]image.PageRef{}}
	tr := &Tracking{tasks: map[int]*taskTrack{7: tt}, report: &TrackReport{}}
	got := tr.pick(7, v, []uint32{0, 1, 2, 4, 5, 6})
	if want := []uint32{2, 6}; !slices.Equal(got, want) {
		t.Fatalf("read %v, want %v", got, want)
	}
	wantRefs := []image.PageRef{{Index: 0, Hash: hashOf(1)}, {Index: 5, Hash: hashOf(5)}}
	if !slices.Equal(tt.reused[v], wantRefs) {
		t.Fatalf("kept %v, want %v", tt.reused[v], wantRefs)
	}
	if got := tr.pick(7, f, []uint32{1}); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("file vma at another offset: read %v, want [1]", got)
	}
	v.Pages = []image.PageRef{{Index: 2, Hash: hashOf(3)}, {Index: 6, Hash: hashOf(4)}}
	var st image.Stats
	tr.addReused(&st)
	want := []image.PageRef{{Index: 0, Hash: hashOf(1)}, {Index: 2, Hash: hashOf(3)}, {Index: 5, Hash: hashOf(5)}, {Index: 6, Hash: hashOf(4)}}
	if !slices.Equal(v.Pages, want) || st.PagesTotal != 2 {
		t.Fatalf("page table %v (+%d), want %v (+2)", v.Pages, st.PagesTotal, want)
	}
	// The same in runs: refs walks the previous vmas a stretch at a time.
	cur := prevCursor{vmas: prev.VMAs, v: v}
	var runs []image.PageRef
	var ends []uint64
	for a := v.Start; a < v.End; {
		next, refs, covered := cur.refs(a, v.End)
		if covered {
			runs = append(runs, refs...)
		}
		ends = append(ends, next)
		a = next
	}
	wantRuns := []image.PageRef{{Index: 0, Hash: hashOf(1)}, {Index: 2, Hash: hashOf(2)}, {Index: 5, Hash: hashOf(5)}}
	if !slices.Equal(runs, wantRuns) || !slices.Equal(ends, []uint64{0x10000 + 3*pg, 0x10000 + 6*pg, v.End}) {
		t.Fatalf("refs %v ending at %x, want %v", runs, ends, wantRuns)
	}
	// A process without a previous checkpoint: everything read.
	tr.tasks[8] = &taskTrack{pid: 8}
	if got := tr.pick(8, v, []uint32{0, 3}); !slices.Equal(got, []uint32{0, 3}) {
		t.Fatalf("untracked process: read %v", got)
	}
}
