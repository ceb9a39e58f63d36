package dedup

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/directio"
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

// TestReadPagesDirect reads pages with ReadPagesDirect, their packs out
// of the page cache: in order, backwards and repeated, into page-aligned
// and odd buffers, across packs and the open pack, each as ReadPages
// reads them, with O_DIRECT reads made where the file system takes them;
// a page damaged in its pack fails with ErrPageCorrupt as with ReadPages.
func TestReadPagesDirect(t *testing.T) {
	s := openT(t)
	a := dump(t, s, "a", []fakeVMA{{1, 0, 1500}})
	b := dump(t, s, "b", []fakeVMA{{2, 0, 700}})
	p := page(3, 0)
	open := Sum(p)
	if _, err := s.PutPages([]image.Hash{open}, [][]byte{p}); err != nil {
		t.Fatal(err)
	}
	var inOrder, mixed []image.Hash
	var inWant, mixedWant [][]byte
	for i, r := range a.Tasks[0].VMAs[0].Pages {
		inOrder, inWant = append(inOrder, r.Hash), append(inWant, page(1, uint64(i)))
	}
	for i := 699; i >= 0; i -= 2 {
		mixed = append(mixed, b.Tasks[0].VMAs[0].Pages[i].Hash, a.Tasks[0].VMAs[0].Pages[i].Hash, open)
		mixedWant = append(mixedWant, page(2, uint64(i)), page(1, uint64(i)), p)
	}
	uncache := func() {
		t.Helper()
		packs, _ := filepath.Glob(filepath.Join(s.dir, packDir, "*"+packExt))
		for _, pk := range packs {
			f, err := os.Open(pk)
			if err != nil {
				t.Fatal(err)
			}
			f.Sync()
			unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
			f.Close()
		}
	}
	huge, err := directio.HugeBuffer(directio.HugeSize * 4)
	if err != nil {
		t.Fatal(err)
	}
	defer directio.FreeHuge(huge)
	check := func(name string, hashes []image.Hash, want [][]byte, dst []byte) {
		t.Helper()
		uncache()
		dst = dst[:len(hashes)*image.PageSize]
		if err := s.ReadPagesDirect(hashes, dst); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i, w := range want {
			if !bytes.Equal(dst[i*image.PageSize:(i+1)*image.PageSize], w) {
				t.Fatalf("%s: page %d reads back wrong", name, i)
			}
		}
	}
	before := coldDirectReads.Load()
	check("in order", inOrder, inWant, huge)
	check("mixed", mixed, mixedWant, huge)
	check("odd buffer", mixed, mixedWant, make([]byte, len(mixed)*image.PageSize+1)[1:])
	direct := coldDirectReads.Load() - before
	if fd, err := unix.Open(filepath.Join(s.dir, packDir), unix.O_RDONLY|unix.O_DIRECT|unix.O_DIRECTORY, 0); err == nil {
		unix.Close(fd)
		if direct == 0 {
			t.Error("no read was made with O_DIRECT")
		}
	}
	t.Logf("%d reads with O_DIRECT", direct)
	// Read again while cached: the same bytes.
	dst := huge[:len(inOrder)*image.PageSize]
	if err := s.ReadPagesDirect(inOrder, dst); err != nil || !bytes.Equal(dst[:image.PageSize], inWant[0]) {
		t.Fatalf("cached: %v", err)
	}
	if err := s.ReadPagesDirect(inOrder[:1], dst); err == nil {
		t.Fatal("a buffer of the wrong size passed")
	}
	flipPageByte(t, s, inOrder[1000], 10)
	uncache()
	if err := s.ReadPagesDirect(inOrder, dst); !errors.Is(err, ErrPageCorrupt) {
		t.Fatalf("ReadPagesDirect over a damaged page: %v", err)
	}
}
