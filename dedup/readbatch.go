package dedup

import (
	"fmt"

	"github.com/ckptfs/ckptfs/image"
)

// maxReadPages bounds one ReadPages call on the store socket (16 MiB of
// pages), so neither end buffers a whole checkpoint for one request.
const maxReadPages = 4096

// ReadPages is the socket form of Store.ReadPages. The reply is the pages
// one after another; the server checks every hash.
func (v *service) ReadPages(hashes []image.Hash, pages *[]byte) error {
	if len(hashes) > maxReadPages {
		return fmt.Errorf("read pages: %d pages in one call, at most %d", len(hashes), maxReadPages)
	}
	n := len(hashes) * image.PageSize
	if cap(*pages) < n {
		*pages = make([]byte, n)
	}
	*pages = (*pages)[:n]
	return v.s.ReadPages(hashes, *pages)
}

// ReadPages reads the pages hashes name from the server into dst
// (len(hashes)*PageSize bytes), in calls of at most maxReadPages pages.
// Calls from several goroutines are served concurrently.
func (c *Client) ReadPages(hashes []image.Hash, dst []byte) error {
	if len(dst) != len(hashes)*image.PageSize {
		return fmt.Errorf("read pages: buffer of %d bytes for %d pages", len(dst), len(hashes))
	}
	for len(hashes) > 0 {
		n := min(len(hashes), maxReadPages)
		want := dst[:n*image.PageSize]
		got := want[:0] // gob decodes into its capacity: no copy
		if err := c.call("ReadPages", hashes[:n], &got); err != nil {
			return err
		}
		if len(got) != len(want) {
			return fmt.Errorf("read pages: %d bytes from the server for %d pages", len(got), n)
		}
		if &got[0] != &want[0] {
			copy(want, got)
		}
		hashes, dst = hashes[n:], dst[n*image.PageSize:]
	}
	return nil
}

// HasReadPages asks the server whether it serves ReadPages (an older
// ckptfs does not: "can't find method").
func (c *Client) HasReadPages() error {
	var none []byte
	return c.call("ReadPages", []image.Hash{}, &none)
}
