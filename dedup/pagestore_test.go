package dedup

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// TestSealWhileWriting seals while writers put pages, each into an open
// pack of its own: after every seal, each page whose PutPages returned
// before the seal began is in a pack record in Badger (what a commit that
// references it needs), and reads back.
func TestSealWhileWriting(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const writers, batches, per = 4, 60, 16
	var mu sync.Mutex
	var returned []image.Hash
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				pages := make([][]byte, per)
				hashes := make([]image.Hash, per)
				for k := range pages {
					p := make([]byte, image.PageSize)
					binary.LittleEndian.PutUint64(p, uint64(w<<20|b<<8|k)+1)
					// Some pages shared between writers: one waits for
					// the other's write.
					if k%4 == 0 {
						binary.LittleEndian.PutUint64(p, uint64(b<<8|k)+1<<40)
					}
					pages[k], hashes[k] = p, Sum(p)
				}
				if _, err := s.PutPages(hashes, pages); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				returned = append(returned, hashes...)
				mu.Unlock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	check := func() {
		mu.Lock()
		want := append([]image.Hash(nil), returned...)
		mu.Unlock()
		if err := s.seal(); err != nil {
			t.Fatal(err)
		}
		x, problems, err := loadPageIndex(s.db)
		if err != nil || len(problems) > 0 {
			t.Fatalf("load index: %v %v", err, problems)
		}
		for _, h := range want {
			if _, ok := x.lookup(h); !ok {
				t.Fatalf("page %s put before the seal is in no sealed pack", h)
			}
		}
	}
	for {
		select {
		case <-done:
			check()
			buf := make([]byte, image.PageSize)
			for _, h := range returned {
				if err := s.ReadPage(h, buf); err != nil {
					t.Fatal(err)
				}
			}
			return
		default:
			check()
		}
	}
}

// TestSealFails: when the seal of a full pack fails (some PutPages calls
// fail with it), the index claims no page of that pack: every page it
// says is stored reads back, and a page put again is stored again.
func TestSealFails(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var once sync.Once
	var failed packID
	sealFault = func(id packID) error {
		err := error(nil)
		once.Do(func() { failed, err = id, errors.New("injected seal failure") })
		return err
	}
	defer func() { sealFault = nil }()
	const writers, batches, per = 2, 40, 256 // 80 MiB: packs fill and seal
	var wg sync.WaitGroup
	all := make([][]image.Hash, writers)
	pagesOf := make(map[image.Hash][]byte)
	var mu sync.Mutex
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				pages := make([][]byte, per)
				hashes := make([]image.Hash, per)
				for k := range pages {
					p := make([]byte, image.PageSize)
					binary.LittleEndian.PutUint64(p, uint64(w<<20|b<<8|k)+1)
					pages[k], hashes[k] = p, Sum(p)
				}
				mu.Lock()
				for k, h := range hashes {
					pagesOf[h] = pages[k]
				}
				mu.Unlock()
				s.PutPages(hashes, pages) // may fail with the seal
				all[w] = append(all[w], hashes...)
			}
		}()
	}
	wg.Wait()
	if err := s.seal(); err == nil && failed == 0 {
		t.Fatal("no pack sealed")
	}
	x, err := s.pages()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, image.PageSize)
	var again []image.Hash
	for _, hs := range all {
		for _, h := range hs {
			l, ok := x.lookup(h)
			if !ok {
				again = append(again, h)
				continue
			}
			if l.pack == failed {
				t.Fatalf("page %s indexed in the pack whose seal failed", h)
			}
			if err := s.ReadPage(h, buf); err != nil {
				t.Fatalf("page the index claims: %v", err)
			}
		}
	}
	if len(again) == 0 {
		t.Fatal("the failed pack lost no page")
	}
	ps := make([][]byte, len(again))
	for i, h := range again {
		ps[i] = pagesOf[h]
	}
	if _, err := s.PutPages(again, ps); err != nil {
		t.Fatal(err)
	}
	if err := s.seal(); err != nil {
		t.Fatal(err)
	}
	for _, h := range again {
		if err := s.ReadPage(h, buf); err != nil {
			t.Fatal(err)
		}
	}
}
