package dedup

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/ckptfs/ckptfs/image"
	badger "github.com/dgraph-io/badger/v4"
)

// dropPageEntries takes hashes out of the pack index records of s (as a
// lost index entry would), leaving the packs and the in-memory index as
// they are.
func dropPageEntries(t testing.TB, s *Store, hashes ...image.Hash) {
	t.Helper()
	drop := make(map[image.Hash]bool)
	for _, h := range hashes {
		drop[h] = true
	}
	recs := make(map[packID][]packEntry)
	err := s.db.View(func(txn *badger.Txn) error {
		return readPackIndex(txn, func(r packRecord) error {
			if r.err != nil {
				return r.err
			}
			for _, e := range r.entries {
				if drop[e.hash] {
					recs[r.id] = nil
				}
			}
			if _, ok := recs[r.id]; ok {
				for _, e := range r.entries {
					if !drop[e.hash] {
						recs[r.id] = append(recs[r.id], e)
					}
				}
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	err = s.db.Update(func(txn *badger.Txn) error {
		for id, es := range recs {
			if err := txn.Set(packIndexKey(id), encodePackIndex(id, es)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPackIndexRecord(t *testing.T) {
	entries := []packEntry{
		{hash: Sum(bytes.Repeat([]byte{1}, image.PageSize)), loc: packLoc{pack: 7, offset: packHeaderSize, length: image.PageSize}},
		{hash: Sum(bytes.Repeat([]byte{2}, image.PageSize)), loc: packLoc{pack: 7, offset: packHeaderSize + image.PageSize, length: 100, flags: blobS2}},
	}
	v := encodePackIndex(7, entries)
	id, got, err := decodePackIndex(packIndexKey(7), v)
	if err != nil || id != 7 || len(got) != 2 || got[0] != entries[0] || got[1] != entries[1] {
		t.Fatalf("decode: %v %v %+v", id, err, got)
	}
	// Under another pack's key, or with any byte changed, it fails.
	if _, _, err := decodePackIndex(packIndexKey(8), v); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("record under another key: %v", err)
	}
	for i := range v {
		w := bytes.Clone(v)
		w[i] ^= 0x40
		if _, _, err := decodePackIndex(packIndexKey(7), w); err == nil {
			t.Fatalf("byte %d flipped: no error", i)
		}
	}
	for n := range len(v) {
		if _, _, err := decodePackIndex(packIndexKey(7), v[:n]); err == nil {
			t.Fatalf("cut at %d: no error", n)
		}
	}
	if _, _, err := decodePackIndex([]byte("x/short"), v); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad key: %v", err)
	}
}

// TestPackIndexOnePerPack checks that a dump writes one index record per
// pack and no key per page.
func TestPackIndexOnePerPack(t *testing.T) {
	s := openT(t)
	dump(t, s, "x", []fakeVMA{{1, 0, 300}})
	var records, pageKeys, entries int
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("p/")})
		for it.Rewind(); it.Valid(); it.Next() {
			pageKeys++
		}
		it.Close()
		return readPackIndex(txn, func(r packRecord) error {
			records++
			entries += len(r.entries)
			return r.err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if pageKeys != 0 || records != 1 || entries != 300 {
		t.Fatalf("%d p/ keys, %d records of %d entries; want 0, 1, 300", pageKeys, records, entries)
	}
}

// TestIndexOfEntries checks the index built of records against a plain
// sort, with duplicates (the first entry of a page is kept).
func TestIndexOfEntries(t *testing.T) {
	for _, n := range []int{0, 1, 2, 3, 100, 5000} {
		var all []packEntry
		for i := range n {
			h := Sum([]byte{byte(i), byte(i >> 8), 1})
			all = append(all, packEntry{hash: h, loc: packLoc{pack: 1, offset: int64(packHeaderSize + i*image.PageSize), length: image.PageSize}})
			if i%7 == 0 {
				all = append(all, packEntry{hash: h, loc: packLoc{pack: 2, offset: packHeaderSize, length: image.PageSize}})
			}
		}
		x := indexOfEntries(slices.Clone(all))
		want := slices.Clone(all)
		slices.SortStableFunc(want, func(a, b packEntry) int { return hashLess(a.hash, b.hash) })
		want = slices.CompactFunc(want, func(a, b packEntry) bool { return a.hash == b.hash })
		if x.len() != len(want) {
			t.Fatalf("n %d: %d hashes, want %d", n, x.len(), len(want))
		}
		for i, e := range want {
			if l, ok := x.lookup(e.hash); !ok || l != e.loc {
				t.Fatalf("n %d: lookup %d: %+v %v", n, i, l, ok)
			}
		}
	}
}
