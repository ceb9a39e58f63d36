package dedup

import (
	"bytes"
	"errors"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// TestReadPages reads pages in batches from the store and through its
// socket (more than one call's worth, repeated hashes), and fails on a
// page the store does not hold.
func TestReadPagesSocket(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const distinct = 300
	var hashes []image.Hash
	var pages [][]byte
	for i := 0; i < distinct; i++ {
		p := bytes.Repeat([]byte{byte(i), byte(i >> 8), 7}, image.PageSize/3+1)[:image.PageSize]
		hashes, pages = append(hashes, Sum(p)), append(pages, p)
	}
	if _, err := s.PutPages(hashes, pages); err != nil {
		t.Fatal(err)
	}
	n := maxReadPages + 5
	want := make([]byte, n*image.PageSize)
	req := make([]image.Hash, n)
	for i := range req {
		req[i] = hashes[i%distinct]
		copy(want[i*image.PageSize:], pages[i%distinct])
	}
	c := serveT(t, s)
	if err := c.HasReadPages(); err != nil {
		t.Fatalf("HasReadPages: %v", err)
	}
	for name, r := range map[string]interface {
		ReadPages([]image.Hash, []byte) error
	}{"store": s, "client": c} {
		got := make([]byte, len(want))
		if err := r.ReadPages(req, got); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: ReadPages: %v, content equal %v", name, err, bytes.Equal(got, want))
		}
		if err := r.ReadPages(req[:2], got[:image.PageSize]); err == nil {
			t.Errorf("%s: a buffer of the wrong size was taken", name)
		}
		missing := append([]image.Hash{hashes[0]}, Sum([]byte("not stored")))
		err := r.ReadPages(missing, make([]byte, 2*image.PageSize))
		if err == nil {
			t.Errorf("%s: no error for a missing page", name)
		} else if name == "store" && !errors.Is(err, ErrPageMissing) {
			t.Errorf("%s: %v, want ErrPageMissing", name, err)
		}
	}
}
