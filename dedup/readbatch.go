package dedup

import (
	"fmt"
	"os"
	"path/filepath"

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

// PageLoc is where a page lies in the store's packs: the blob of Length
// bytes at Offset of pack Pack (its file STORE/packs/<Pack as 16 hex
// digits>.pack), Flags as in the pack's trailer (blobS2: compressed).
type PageLoc struct {
	Pack   uint64
	Offset int64
	Length uint32
	Flags  uint32
}

// LocatePages answers where each of hashes is stored (the page index),
// for a client that reads the packs itself (PackReader).
func (v *service) LocatePages(hashes []image.Hash, locs *[]PageLoc) error {
	if len(hashes) > maxReadPages {
		return fmt.Errorf("locate pages: %d pages in one call, at most %d", len(hashes), maxReadPages)
	}
	ls, err := v.s.locateAll(hashes)
	if err != nil {
		return err
	}
	out := make([]PageLoc, len(ls))
	for i, l := range ls {
		out[i] = PageLoc{Pack: uint64(l.pack), Offset: l.offset, Length: l.length, Flags: l.flags}
	}
	*locs = out
	return nil
}

// PackReader reads pages of the store a Client is connected to straight
// from its pack files: the server only says where the pages lie
// (LocatePages), the reader preads them (the same runs as
// Store.ReadPages) and checks every page against its hash itself. The
// page data does not cross the socket: a restore from a mount of a local
// store reads as fast as from the store's own process. A page it cannot
// read or that fails its hash (gc moved it, the pack is not readable by
// this user, damage) is read over the socket instead, where the server
// reports damage as it always does.
type PackReader struct {
	c     *Client
	packs *packFiles
}

// NewPackReader returns a reader of c's store packs, or an error if the
// server cannot locate pages (an older ckptfs) or the packs directory
// cannot be read by this process.
func NewPackReader(c *Client) (*PackReader, error) {
	var none []PageLoc
	if err := c.call("LocatePages", []image.Hash{}, &none); err != nil {
		return nil, fmt.Errorf("store %s: locate pages: %w", c.dir, err)
	}
	d, err := os.Open(filepath.Join(c.dir, packDir))
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", c.dir, err)
	}
	d.Close()
	return &PackReader{c: c, packs: &packFiles{dir: c.dir, foreign: true, files: map[packID]*os.File{}}}, nil
}

// ReadPages fills dst (len(hashes)*PageSize bytes) with the pages hashes
// name, in order, each checked against its hash. Calls from several
// goroutines run concurrently.
func (r *PackReader) ReadPages(hashes []image.Hash, dst []byte) error {
	if len(dst) != len(hashes)*image.PageSize {
		return fmt.Errorf("read pages: buffer of %d bytes for %d pages", len(dst), len(hashes))
	}
	for len(hashes) > 0 {
		n := min(len(hashes), maxReadPages)
		if err := r.readBatch(hashes[:n], dst[:n*image.PageSize]); err != nil {
			return err
		}
		hashes, dst = hashes[n:], dst[n*image.PageSize:]
	}
	return nil
}

func (r *PackReader) readBatch(hashes []image.Hash, dst []byte) error {
	var wire []PageLoc
	if err := r.c.call("LocatePages", hashes, &wire); err != nil {
		return err
	}
	if len(wire) != len(hashes) {
		return fmt.Errorf("locate pages: %d answers for %d pages", len(wire), len(hashes))
	}
	locs := make([]packLoc, len(wire))
	for i, l := range wire {
		if l.Pack == 0 || l.Offset < packHeaderSize || l.Length == 0 || l.Length > 2*image.PageSize {
			return fmt.Errorf("locate pages: page %s at a bad place (pack %016x offset %d length %d)", hashes[i], l.Pack, l.Offset, l.Length)
		}
		locs[i] = packLoc{pack: packID(l.Pack), offset: l.Offset, length: l.Length, flags: l.Flags}
	}
	bad := readLocated(r.packs, locs, dst)
	checkHashes(hashes, dst, bad)
	var again []int
	for i, b := range bad {
		if b {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return nil
	}
	hs := make([]image.Hash, len(again))
	for k, i := range again {
		hs[k] = hashes[i]
	}
	buf := make([]byte, len(hs)*image.PageSize)
	if err := r.c.ReadPages(hs, buf); err != nil {
		return err
	}
	for k, i := range again {
		copy(dst[i*image.PageSize:(i+1)*image.PageSize], buf[k*image.PageSize:])
	}
	return nil
}

// Close closes the pack files the reader opened (not the Client).
func (r *PackReader) Close() { r.packs.close() }
