package restorer

import (
	"testing"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/uffd"
)

// readySource is a loaded source of n pages at start, pages listed.
func readySource(start uint64, n int, listed ...int) *lazySource {
	s := &lazySource{start: start, end: start + uint64(n)*image.PageSize, ready: make(chan struct{})}
	s.hashes = make([]image.Hash, n)
	s.listed = newBitset(n)
	for _, p := range listed {
		s.listed.set(p)
	}
	close(s.ready)
	return s
}

// TestLazySpaceEvents checks the bookkeeping of events on a space: which
// pages are still needed and where each source page is mapped.
func TestLazySpaceEvents(t *testing.T) {
	const pg = image.PageSize
	a := readySource(0x100000, 16, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
	b := readySource(0x200000, 8, 1, 3)
	s := newLazySpace(&lazyServer{}, "test", -1, -1, []*lazySource{a, b})
	if s.left.Load() != 24 {
		t.Fatalf("left %d before trimming, want every page (24)", s.left.Load())
	}
	for _, src := range s.srcs {
		if err := s.ready(src); err != nil {
			t.Fatal(err)
		}
	}
	if s.left.Load() != 18 {
		t.Fatalf("left %d after trimming, want the 18 listed", s.left.Load())
	}
	// MADV_DONTNEED of pages 2-3 of a: they read zero now.
	s.apply(uffd.Msg{Event: uffd.EventRemove, Start: 0x100000 + 2*pg, End: 0x100000 + 4*pg})
	if s.left.Load() != 16 || s.need[a].test(2) || s.need[a].test(3) || !s.need[a].test(4) {
		t.Fatalf("after remove: left %d, need %b", s.left.Load(), s.need[a][0])
	}
	if src, p, ok := s.lookup(0x100000 + 2*pg); !ok || src != a || p != 2 {
		t.Fatalf("a removed range is still mapped: lookup %v %d %v", src == a, p, ok)
	}
	// munmap of pages 14-15.
	s.apply(uffd.Msg{Event: uffd.EventUnmap, Start: 0x100000 + 14*pg, End: 0x100000 + 16*pg})
	if s.left.Load() != 14 {
		t.Fatalf("after unmap: left %d, want 14", s.left.Load())
	}
	if _, _, ok := s.lookup(0x100000 + 14*pg); ok {
		t.Fatal("an unmapped page is still mapped")
	}
	// mremap of pages 4-7 to 0x300000.
	s.apply(uffd.Msg{Event: uffd.EventRemap, From: 0x100000 + 4*pg, To: 0x300000, Len: 4 * pg})
	if src, p, ok := s.lookup(0x300000 + pg); !ok || src != a || p != 5 {
		t.Fatalf("moved page: lookup %v %d %v, want a page 5", src == a, p, ok)
	}
	if _, _, ok := s.lookup(0x100000 + 5*pg); ok {
		t.Fatal("the old address of a moved page is still mapped")
	}
	if src, p, ok := s.lookup(0x100000 + 8*pg); !ok || src != a || p != 8 {
		t.Fatalf("page after the moved range: lookup %v %d %v", src == a, p, ok)
	}
	if s.left.Load() != 14 || !s.need[a].test(5) {
		t.Fatal("moved pages are no longer needed")
	}
	// mremap onto b's range replaces it: b's pages there are gone.
	s.apply(uffd.Msg{Event: uffd.EventRemap, From: 0x300000, To: 0x200000, Len: 4 * pg})
	if s.need[b].test(1) || s.need[b].test(3) || s.left.Load() != 12 {
		t.Fatalf("pages of a range mremap replaced are still needed (left %d)", s.left.Load())
	}
	if src, p, ok := s.lookup(0x200000 + 3*pg); !ok || src != a || p != 7 {
		t.Fatalf("page moved onto b: lookup %v %d %v, want a page 7", src == a, p, ok)
	}
	// A forked child needs what the parent needs, independently.
	c := s.child(-1)
	c.forget(0x100000, 0x100000+2*pg)
	if c.left.Load() != 10 || s.left.Load() != 12 || !s.need[a].test(0) {
		t.Fatalf("child left %d, parent left %d: the child's events changed the parent", c.left.Load(), s.left.Load())
	}
}
