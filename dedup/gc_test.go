package dedup

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// TestGCRewritesAndDropsPacks: a pack whose pages are all dead is deleted,
// one that is mostly dead is rewritten with its live pages only, and small
// packs are merged into one; the space comes back on disk (du of the
// packs).
func TestGCRewritesAndDropsPacks(t *testing.T) {
	s := openT(t)
	a := dump(t, s, "a", stepsA) // pack A: 600 pages
	dump(t, s, "b", stepsB)      // pack B: its 400 new pages (200 are in A)
	c := dump(t, s, "c", stepsC) // pack C: 100 pages
	packs := filepath.Join(s.Dir(), packDir)
	before := diskUsage(packs)
	if err := s.Remove(a.ID, c.ID); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC()
	if err != nil {
		t.Fatal(err)
	}
	after := diskUsage(packs)
	t.Logf("gc %+v; packs on disk %d -> %d bytes", res, before, after)
	// A is rewritten (mostly dead), B with it (both small), C dropped.
	if res.Pages != 400+100 || res.PacksDropped != 1 || res.PacksRewritten != 2 {
		t.Fatalf("gc %+v, want 500 pages freed, 1 pack dropped, 2 rewritten", res)
	}
	if freed := before - after; freed < 500*4096 {
		t.Fatalf("packs on disk shrank by %d bytes, want at least %d", freed, 500*4096)
	}
	ids, _ := listPacks(s.Dir())
	if len(ids) != 1 {
		t.Fatalf("%d packs after gc, want 1", len(ids))
	}
	b, err := s.Load("b")
	if err != nil {
		t.Fatal(err)
	}
	checkReadable(t, s, b, stepsB)
	if p, err := s.Verify(); err != nil || len(p) > 0 {
		t.Fatalf("verify: %v %q", err, p)
	}
	// A second gc finds nothing to do.
	if res, err := s.GC(); err != nil || res.Pages != 0 || res.PacksDropped != 0 || res.PacksRewritten != 0 {
		t.Fatalf("second gc: %+v %v", res, err)
	}
}

// TestReadDuringGC: pages of a kept checkpoint read back right while gc
// rewrites and deletes the packs they were in (the mount serves reads
// during gc): a read that meets a deleted pack looks the page up again.
func TestReadDuringGC(t *testing.T) {
	s := openT(t)
	for round := range 3 {
		seed := uint64(10 + round)
		va := []fakeVMA{{seed: seed, first: 0, n: 600}}
		vb := []fakeVMA{{seed: seed, first: 400, n: 600}} // shares 200 pages with a
		a := dump(t, s, "a", va)
		b := dump(t, s, "b", vb)
		if err := s.Remove(a.ID); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		errs := make(chan error, 2)
		var wg sync.WaitGroup
		for g := range 2 {
			wg.Go(func() {
				buf := make([]byte, image.PageSize)
				hs := make([]image.Hash, 0, 64)
				dst := make([]byte, 64*image.PageSize)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					refs := b.Tasks[0].VMAs[0].Pages
					if g == 0 {
						r := refs[i%len(refs)]
						if err := s.ReadPage(r.Hash, buf); err != nil {
							errs <- err
							return
						}
						continue
					}
					hs = hs[:0]
					for k := range 64 {
						hs = append(hs, refs[(i*64+k)%len(refs)].Hash)
					}
					if err := s.ReadPages(hs, dst); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		res, err := s.GC()
		close(stop)
		wg.Wait()
		close(errs)
		if err != nil {
			t.Fatal(err)
		}
		for err := range errs {
			t.Fatalf("round %d: read during gc: %v", round, err)
		}
		if res.PacksRewritten == 0 {
			t.Fatalf("round %d: gc %+v rewrote no pack", round, res)
		}
		checkReadable(t, s, b, vb)
		if err := s.Remove(b.ID); err != nil {
			t.Fatal(err)
		}
	}
}
