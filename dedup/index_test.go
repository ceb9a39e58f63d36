package dedup

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

func randHash(r *rand.Rand) image.Hash {
	var h image.Hash
	for i := range h {
		h[i] = byte(r.Uint32())
	}
	return h
}

// TestPageIndex checks the index against a map through adds (with merges),
// removes and look-ups of present and absent hashes, including hashes that
// share their first 8 bytes (same bucket, different page).
func TestPageIndex(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var start []image.Hash
	for range 5000 {
		start = append(start, randHash(r))
	}
	slices.SortFunc(start, hashLess)
	x := newPageIndex(slices.Clone(start), nil)
	model := make(map[image.Hash]bool)
	for _, h := range start {
		model[h] = true
	}
	var all []image.Hash // every hash ever used, present or not
	all = append(all, start...)
	check := func(step string) {
		t.Helper()
		miss := make([]bool, len(all))
		x.missing(all, miss)
		for i, h := range all {
			if miss[i] == model[h] {
				t.Fatalf("%s: hash %d %s: missing=%v, stored=%v", step, i, h, miss[i], model[h])
			}
		}
		if x.len() != len(model) {
			t.Fatalf("%s: len %d, want %d", step, x.len(), len(model))
		}
	}
	check("start")
	for round := range 20 {
		// Add a batch (some already present, some twins of present ones
		// differing only in the last byte, some repeated in the batch).
		var batch []image.Hash
		for range 10000 + round*1000 {
			var h image.Hash
			switch r.IntN(4) {
			case 0:
				h = all[r.IntN(len(all))]
			case 1:
				h = all[r.IntN(len(all))]
				h[31] ^= byte(1 + r.IntN(255))
			default:
				h = randHash(r)
			}
			batch = append(batch, h, h)
		}
		x.add(batch, nil)
		for _, h := range batch {
			model[h] = true
		}
		all = append(all, batch...)
		check("add")
		// Remove a random sorted subset, with some absent hashes.
		var dead []image.Hash
		for h := range model {
			if r.IntN(5) == 0 {
				dead = append(dead, h)
			}
		}
		dead = append(dead, randHash(r))
		slices.SortFunc(dead, hashLess)
		dead = slices.Compact(dead)
		x.remove(dead)
		for _, h := range dead {
			delete(model, h)
		}
		check("remove")
	}
	// Empty index.
	e := newPageIndex(nil, nil)
	miss := []bool{false}
	e.missing([]image.Hash{randHash(r)}, miss)
	if !miss[0] {
		t.Fatal("empty index has a hash")
	}
}

// TestPageIndexConcurrent runs look-ups while adds merge (go test -race).
func TestPageIndexConcurrent(t *testing.T) {
	x := newPageIndex(nil, nil)
	var wg sync.WaitGroup
	added := make(chan []image.Hash, 100)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(added)
		r := rand.New(rand.NewPCG(5, 6))
		for range 40 {
			var b []image.Hash
			for range 4096 {
				b = append(b, randHash(r))
			}
			x.add(b, nil)
			added <- b
		}
	}()
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			miss := make([]bool, 4096)
			for b := range added {
				x.missing(b, miss)
				for i, m := range miss {
					if m {
						t.Errorf("added hash %d missing", i)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// TestStoreIndex checks that the store's index follows PutPages, GC and a
// reopen: Missing agrees with Badger.
func TestStoreIndex(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	keep := dump(t, s, "keep", []fakeVMA{{21, 0, 3000}})
	gone := dump(t, s, "gone", []fakeVMA{{22, 0, 1000}})
	hashes := func(c *image.Checkpoint) []image.Hash {
		var hs []image.Hash
		for _, r := range c.Tasks[0].VMAs[0].Pages {
			hs = append(hs, r.Hash)
		}
		return hs
	}
	agree := func(step string, hs []image.Hash, want bool) {
		t.Helper()
		miss, err := s.Missing(hs)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, image.PageSize)
		for i, m := range miss {
			if m != want {
				t.Fatalf("%s: page %d missing=%v, want %v", step, i, m, want)
			}
			if err := s.ReadPage(hs[i], buf); (err == nil) == m {
				t.Fatalf("%s: page %d missing=%v but ReadPage: %v", step, i, m, err)
			}
		}
	}
	agree("after dump", hashes(keep), false)
	agree("after dump", hashes(gone), false)
	if err := s.Remove("gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(); err != nil {
		t.Fatal(err)
	}
	agree("after gc", hashes(keep), false)
	agree("after gc", hashes(gone), true)
	// A second dump of the collected pages stores them again.
	again := dump(t, s, "again", []fakeVMA{{22, 0, 1000}})
	if again.Stats.BytesAdded != 1000*image.PageSize {
		t.Fatalf("re-dump added %d bytes, want %d", again.Stats.BytesAdded, 1000*image.PageSize)
	}
	s.Close()
	if s, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	agree("after reopen", hashes(keep), false)
	agree("after reopen", hashes(again), false)
	if n := s.index.Load().len(); n != 4000 {
		t.Fatalf("index of %d pages after reopen, want 4000", n)
	}
}

// TestPutPagesConcurrent puts overlapping page sets from several
// goroutines at once: every page is stored, and counted as added once.
func TestPutPagesConcurrent(t *testing.T) {
	s := openT(t)
	const n = 3000
	pages := make([][]byte, n)
	hashes := make([]image.Hash, n)
	for i := range pages {
		pages[i] = page(31, uint64(i))
		hashes[i] = Sum(pages[i])
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var added int64
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 9))
			for range 40 {
				// A batch of up to 256 pages from a random window, with
				// repeats: the goroutines overlap all the time.
				start := r.IntN(n - 300)
				var hs []image.Hash
				var ps [][]byte
				for range 1 + r.IntN(256) {
					i := start + r.IntN(300)
					hs, ps = append(hs, hashes[i]), append(ps, pages[i])
				}
				a, err := s.PutPages(hs, ps)
				if err != nil {
					t.Error(err)
					return
				}
				miss, err := s.Missing(hs)
				if err != nil {
					t.Error(err)
					return
				}
				for i, m := range miss {
					if m {
						t.Errorf("page %s missing after PutPages returned", hs[i])
						return
					}
				}
				mu.Lock()
				added += a
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	miss, err := s.Missing(hashes)
	if err != nil {
		t.Fatal(err)
	}
	stored := 0
	buf := make([]byte, image.PageSize)
	for i, m := range miss {
		if !m {
			stored++
			if err := s.ReadPage(hashes[i], buf); err != nil {
				t.Fatal(err)
			}
		}
	}
	if added != int64(stored)*image.PageSize {
		t.Fatalf("added %d bytes for %d pages stored (%d bytes)", added, stored, stored*image.PageSize)
	}
	st, err := s.Stats()
	if err != nil || st.Pages != int64(stored) {
		t.Fatalf("stats %+v %v, want %d pages", st, err, stored)
	}
}

// TestPageIndexLocations checks that locations come back as they went in,
// through adds, merges, relocations and removes: slim ones (the pack by
// its number) and those too wide for 12 bytes (kept aside).
func TestPageIndexLocations(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	x := newPageIndex(nil, nil)
	model := make(map[image.Hash]packLoc)
	locOf := func(i int) packLoc {
		l := packLoc{pack: packID(1 + i%7), offset: int64(packHeaderSize + i), length: uint32(1 + i%image.PageSize), flags: uint32(i % 2)}
		if i%97 == 0 {
			l.offset = 5<<30 + int64(i) // past 4 GiB: wide
		}
		return l
	}
	var hs []image.Hash
	for round := range 3 {
		var batch []image.Hash
		var locs []packLoc
		for i := range 70000 {
			h := randHash(r)
			l := locOf(round*100000 + i)
			batch, locs = append(batch, h), append(locs, l)
			model[h] = l
		}
		x.add(batch, locs)
		hs = append(hs, batch...)
	}
	var moved []packEntry
	for i, h := range hs {
		if i%5 == 0 {
			l := locOf(i + 7)
			if i%10 == 0 {
				l.offset = 6<<30 + int64(i)
			}
			moved = append(moved, packEntry{hash: h, loc: l})
			model[h] = l
		}
	}
	x.relocate(moved)
	var dead []image.Hash
	for i, h := range hs {
		if i%3 == 0 {
			dead = append(dead, h)
			delete(model, h)
		}
	}
	x.removeUnsorted(dead)
	for h, want := range model {
		if got, ok := x.lookup(h); !ok || got != want {
			t.Fatalf("%s: %+v %v, want %+v", h, got, ok, want)
		}
	}
	for _, h := range dead {
		if _, ok := x.lookup(h); ok {
			t.Fatalf("removed %s found", h)
		}
	}
	if x.len() != len(model) {
		t.Fatalf("len %d, want %d", x.len(), len(model))
	}
	for h := range x.wide {
		if _, ok := model[h]; !ok {
			t.Fatalf("wide location of a removed page %s kept", h)
		}
	}
}

// TestPageIndexShrink removes most of a large index (its table shrinks)
// and adds again: what stays is found, with its location, what went is
// not.
func TestPageIndexShrink(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	x := newPageIndex(nil, nil)
	var hs []image.Hash
	var locs []packLoc
	for i := range 50000 {
		hs = append(hs, randHash(r))
		locs = append(locs, packLoc{pack: packID(1 + i%3), offset: int64(packHeaderSize + i*image.PageSize), length: image.PageSize})
	}
	x.add(hs, locs)
	big := len(x.tab)
	x.remove(hs[100:])
	if len(x.tab) >= big {
		t.Fatalf("table of %d slots after removing all but 100 of 50000 (was %d)", len(x.tab), big)
	}
	x.add(hs[200:300], locs[200:300])
	for i, h := range hs {
		l, ok := x.lookup(h)
		want := i < 100 || (i >= 200 && i < 300)
		if ok != want || (ok && l != locs[i]) {
			t.Fatalf("hash %d: %+v %v, want present=%v at %+v", i, l, ok, want, locs[i])
		}
	}
	if x.len() != 200 {
		t.Fatalf("len %d, want 200", x.len())
	}
}
