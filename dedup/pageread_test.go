package dedup

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// TestReadPages reads pages of several packs, of the open pack and
// repeated ones in one call, in an order that is not the packs'; a page
// damaged in its pack fails the call with ErrPageCorrupt, a page not
// stored with ErrPageMissing.
func TestReadPages(t *testing.T) {
	s := openT(t)
	a := dump(t, s, "a", []fakeVMA{{1, 0, 300}})
	b := dump(t, s, "b", []fakeVMA{{2, 0, 300}})
	// Pages put but not committed: in the open pack.
	var open []image.Hash
	for i := range 5 {
		p := page(3, uint64(i))
		open = append(open, Sum(p))
		if _, err := s.PutPages(open[i:i+1], [][]byte{p}); err != nil {
			t.Fatal(err)
		}
	}
	var hashes []image.Hash
	var want [][]byte
	for i := 299; i >= 0; i -= 3 {
		hashes = append(hashes, b.Tasks[0].VMAs[0].Pages[i].Hash, a.Tasks[0].VMAs[0].Pages[i].Hash)
		want = append(want, page(2, uint64(i)), page(1, uint64(i)))
	}
	for i, h := range open {
		hashes = append(hashes, h, h)
		want = append(want, page(3, uint64(i)), page(3, uint64(i)))
	}
	dst := make([]byte, len(hashes)*image.PageSize)
	if err := s.ReadPages(hashes, dst); err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if !bytes.Equal(dst[i*image.PageSize:(i+1)*image.PageSize], w) {
			t.Fatalf("page %d of the call reads back wrong", i)
		}
	}
	if err := s.ReadPages(hashes[:1], dst); err == nil {
		t.Fatal("a buffer of the wrong size passed")
	}
	flipPageByte(t, s, hashes[7], 4000)
	if err := s.ReadPages(hashes, dst); !errors.Is(err, ErrPageCorrupt) {
		t.Fatalf("ReadPages over a damaged page: %v", err)
	}
	gone := Sum(page(9, 9))
	if err := s.ReadPages([]image.Hash{hashes[0], gone}, dst[:2*image.PageSize]); !errors.Is(err, ErrPageMissing) {
		t.Fatalf("ReadPages of a page not stored: %v", err)
	}
}
