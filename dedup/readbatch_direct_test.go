package dedup

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// TestPackReader reads pages of a served store straight from its packs,
// in and out of pack order, with Prefetch ahead and without; a page
// damaged in its pack is read again over the socket, whose server
// refuses it with ErrPageCorrupt; a pack gone (gc) is read over the
// socket too; a page not stored is ErrPageMissing.
func TestPackReader(t *testing.T) {
	s := openT(t)
	a := dump(t, s, "a", []fakeVMA{{1, 0, 600}})
	c := serveT(t, s)
	r, err := NewPackReader(c)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pages := a.Tasks[0].VMAs[0].Pages
	var hashes []image.Hash
	var want [][]byte
	for i := range pages {
		hashes = append(hashes, pages[i].Hash)
		want = append(want, page(1, uint64(i)))
	}
	// Backwards, and a page twice.
	var rev []image.Hash
	var revWant [][]byte
	for i := len(hashes) - 1; i >= 0; i -= 2 {
		rev, revWant = append(rev, hashes[i]), append(revWant, want[i])
	}
	rev, revWant = append(rev, hashes[0]), append(revWant, want[0])
	check := func(name string, hs []image.Hash, ws [][]byte) {
		t.Helper()
		dst := make([]byte, len(hs)*image.PageSize)
		if err := r.ReadPages(hs, dst); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i, w := range ws {
			if !bytes.Equal(dst[i*image.PageSize:(i+1)*image.PageSize], w) {
				t.Fatalf("%s: page %d reads back wrong", name, i)
			}
		}
	}
	check("in order", hashes, want)
	check("backwards", rev, revWant)
	r.Prefetch(hashes)
	check("prefetched", hashes, want)
	if err := r.ReadPages(hashes[:1], make([]byte, 2*image.PageSize)); err == nil {
		t.Fatal("a buffer of the wrong size passed")
	}
	gone := Sum(page(9, 9))
	if err := r.ReadPages([]image.Hash{hashes[0], gone}, make([]byte, 2*image.PageSize)); !errors.Is(err, ErrPageMissing) {
		t.Fatalf("a page not stored: %v", err)
	}

	// A pack the reader cannot open (gc deleted it; here the server
	// still has it open): the page comes over the socket.
	loc, err := s.locate(hashes[3])
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ReadPage(hashes[3], make([]byte, image.PageSize)); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r2, err := NewPackReader(c)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	r = r2
	saved := packPath(s.dir, loc.pack) + ".saved"
	if err := os.Rename(packPath(s.dir, loc.pack), saved); err != nil {
		t.Fatal(err)
	}
	check("pack gone", hashes[3:5], want[3:5])
	if err := os.Rename(saved, packPath(s.dir, loc.pack)); err != nil {
		t.Fatal(err)
	}

	flipPageByte(t, s, hashes[7], 100)
	if err := r.ReadPages(hashes[:20], make([]byte, 20*image.PageSize)); !errors.Is(err, ErrPageCorrupt) {
		t.Fatalf("a damaged page: %v", err)
	}
}
