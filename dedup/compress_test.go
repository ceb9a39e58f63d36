package dedup

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// textPage is a compressible page: text with its number in it.
func textPage(n int) []byte {
	var b bytes.Buffer
	for b.Len() < image.PageSize {
		fmt.Fprintf(&b, "page %d: the quick brown fox jumps over the lazy dog. ", n)
	}
	return b.Bytes()[:image.PageSize]
}

// TestCompressedPages: with compression on, compressible pages are
// stored smaller and incompressible ones raw; both read back (ReadPage,
// ReadPages), verify, survive a gc that rewrites their pack, and a
// damaged compressed page is caught.
func TestCompressedPages(t *testing.T) {
	s := openT(t)
	s.SetCompression(true)
	var hashes []image.Hash
	var pages [][]byte
	for i := range 200 {
		p := textPage(i)
		if i%2 == 1 {
			p = page(5, uint64(i))
		}
		hashes, pages = append(hashes, Sum(p)), append(pages, p)
	}
	if _, err := s.PutPages(hashes, pages); err != nil {
		t.Fatal(err)
	}
	c := &image.Checkpoint{Name: "z", RootPID: 1, Tasks: []*image.Task{{PID: 1, Comm: "t",
		Threads: []*image.Thread{{TID: 1}},
		VMAs:    []*image.VMA{{Start: 0x10000, End: 0x10000 + 400*image.PageSize, Perms: "rw-p", Kind: image.VMAAnon}}}}}
	for i, h := range hashes {
		c.Tasks[0].VMAs[0].Pages = append(c.Tasks[0].VMAs[0].Pages, image.PageRef{Index: uint32(2 * i), Hash: h})
	}
	c.Stats.PagesTotal = 200
	if err := s.Commit(c); err != nil {
		t.Fatal(err)
	}
	packs := diskUsage(s.Dir() + "/" + packDir)
	if packs >= 150*image.PageSize {
		t.Errorf("packs take %d bytes for 100 compressible and 100 random pages", packs)
	}
	check := func() {
		t.Helper()
		buf := make([]byte, image.PageSize)
		for i, h := range hashes {
			if err := s.ReadPage(h, buf); err != nil || !bytes.Equal(buf, pages[i]) {
				t.Fatalf("page %d: %v", i, err)
			}
		}
		dst := make([]byte, len(hashes)*image.PageSize)
		if err := s.ReadPages(hashes, dst); err != nil {
			t.Fatal(err)
		}
		for i := range hashes {
			if !bytes.Equal(dst[i*image.PageSize:(i+1)*image.PageSize], pages[i]) {
				t.Fatalf("ReadPages: page %d differs", i)
			}
		}
		if p, err := s.Verify(); err != nil || len(p) > 0 {
			t.Fatalf("verify: %v %q", err, p)
		}
	}
	check()
	// A second checkpoint keeps half the pages; gc rewrites the pack.
	c2 := *c
	c2.ID, c2.Name = "", "half"
	t2 := *c.Tasks[0]
	v2 := *t2.VMAs[0]
	v2.Pages = v2.Pages[:100]
	t2.VMAs = []*image.VMA{&v2}
	c2.Tasks = []*image.Task{&t2}
	c2.Stats.PagesTotal = 100
	if err := s.Commit(&c2); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(c.ID); err != nil {
		t.Fatal(err)
	}
	res, err := s.GC()
	if err != nil || res.PacksRewritten != 1 {
		t.Fatalf("gc %+v %v, want the pack rewritten", res, err)
	}
	hashes, pages = hashes[:100], pages[:100]
	check()
	flipPageByte(t, s, hashes[0], 20) // a compressed page
	buf := make([]byte, image.PageSize)
	if err := s.ReadPage(hashes[0], buf); !errors.Is(err, ErrPageCorrupt) {
		t.Fatalf("ReadPage of a damaged compressed page: %v", err)
	}
	if p, _ := s.Verify(); len(p) != 1 {
		t.Fatalf("verify of a damaged compressed page: %q", p)
	}
}
