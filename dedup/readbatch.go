package dedup

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"

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

// LocatePages answers where each page lies in the store's packs, for a
// client that reads the packs itself (PackReader). Both ends are packed
// bytes, not slices of arrays and structs, which gob would encode field
// by field (it cost a restore of 1 GiB 6 % of its CPU): hashes is the
// 32-byte hashes one after another, the reply locLen bytes a page, each
// pack id u64, offset u64, length u32, flags u32 (big-endian, as the
// pack's trailer entries; flags as there: blobS2).
func (v *service) LocatePages(hashes []byte, locs *[]byte) error {
	if len(hashes)%len(image.Hash{}) != 0 {
		return fmt.Errorf("locate pages: %d bytes of hashes", len(hashes))
	}
	n := len(hashes) / len(image.Hash{})
	if n > maxReadPages {
		return fmt.Errorf("locate pages: %d pages in one call, at most %d", n, maxReadPages)
	}
	hs := make([]image.Hash, n)
	for i := range hs {
		copy(hs[i][:], hashes[i*len(image.Hash{}):])
	}
	ls, err := v.s.locateAll(hs)
	if err != nil {
		return err
	}
	out := make([]byte, n*locLen)
	for i, l := range ls {
		e := out[i*locLen:]
		binary.BigEndian.PutUint64(e, uint64(l.pack))
		binary.BigEndian.PutUint64(e[8:], uint64(l.offset))
		binary.BigEndian.PutUint32(e[16:], l.length)
		binary.BigEndian.PutUint32(e[20:], l.flags)
	}
	*locs = out
	return nil
}

// locLen is the size of one location in a LocatePages reply.
const locLen = 24

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

	mu     sync.Mutex
	room   *sync.Cond             // ahead lost entries, or closed
	ahead  map[image.Hash]packLoc // located by Prefetch, not read yet
	closed bool
}

// maxAhead bounds how many pages Prefetch locates and asks the kernel
// for ahead of ReadPages (64 MiB of pages).
const maxAhead = 16384

// NewPackReader returns a reader of c's store packs, or an error if the
// server cannot locate pages (an older ckptfs) or the packs directory
// cannot be read by this process.
func NewPackReader(c *Client) (*PackReader, error) {
	var none []byte
	if err := c.call("LocatePages", []byte{}, &none); err != nil {
		return nil, fmt.Errorf("store %s: locate pages: %w", c.dir, err)
	}
	d, err := os.Open(filepath.Join(c.dir, packDir))
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", c.dir, err)
	}
	d.Close()
	r := &PackReader{c: c, packs: &packFiles{dir: c.dir, foreign: true, files: map[packID]*os.File{}},
		ahead: map[image.Hash]packLoc{}}
	r.room = sync.NewCond(&r.mu)
	return r, nil
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
	locs, ok := r.takeAhead(hashes)
	if !ok {
		var err error
		if locs, err = r.locate(hashes); err != nil {
			return err
		}
	}
	bad := readLocated(r.packs, locs, dst, false)
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

// locate asks the server where hashes (at most maxReadPages) lie.
func (r *PackReader) locate(hashes []image.Hash) ([]packLoc, error) {
	req := make([]byte, 0, len(hashes)*len(image.Hash{}))
	for _, h := range hashes {
		req = append(req, h[:]...)
	}
	var wire []byte
	if err := r.c.call("LocatePages", req, &wire); err != nil {
		return nil, err
	}
	if len(wire) != len(hashes)*locLen {
		return nil, fmt.Errorf("locate pages: %d bytes of answers for %d pages", len(wire), len(hashes))
	}
	locs := make([]packLoc, len(hashes))
	for i := range locs {
		e := wire[i*locLen:]
		l := packLoc{pack: packID(binary.BigEndian.Uint64(e)), offset: int64(binary.BigEndian.Uint64(e[8:])),
			length: binary.BigEndian.Uint32(e[16:]), flags: binary.BigEndian.Uint32(e[20:])}
		if l.pack == 0 || l.offset < packHeaderSize || l.length == 0 || l.length > image.PageSize {
			return nil, fmt.Errorf("locate pages: page %s at a bad place (pack %s offset %d length %d)", hashes[i], l.pack, l.offset, l.length)
		}
		locs[i] = l
	}
	return locs, nil
}

// takeAhead returns the locations Prefetch found for all of hashes, and
// forgets them; ok is false if it has not found them all.
func (r *PackReader) takeAhead(hashes []image.Hash) ([]packLoc, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	locs := make([]packLoc, len(hashes))
	for i, h := range hashes {
		l, ok := r.ahead[h]
		if !ok {
			return nil, false
		}
		locs[i] = l
	}
	for _, h := range hashes {
		delete(r.ahead, h)
	}
	r.room.Broadcast()
	return locs, true
}

// Prefetch locates the pages hashes name, in the background, and asks the
// kernel to read their packs' bytes ahead (POSIX_FADV_WILLNEED), in the
// order given, at most maxAhead pages ahead of ReadPages: a caller about
// to ReadPages them in that order finds them located and read. It is only
// a hint: errors are ignored (ReadPages meets them), and pages ReadPages
// asks for before Prefetch got to them are located by ReadPages.
func (r *PackReader) Prefetch(hashes []image.Hash) {
	go func() {
		for len(hashes) > 0 {
			n := min(len(hashes), maxReadPages)
			r.mu.Lock()
			for !r.closed && len(r.ahead)+n > maxAhead {
				r.room.Wait()
			}
			r.mu.Unlock()
			locs, err := r.locate(hashes[:n])
			if err != nil {
				return
			}
			r.mu.Lock()
			if r.closed {
				r.mu.Unlock()
				return
			}
			for i, h := range hashes[:n] {
				r.ahead[h] = locs[i]
			}
			r.mu.Unlock()
			willNeed(r.packs, locs)
			hashes = hashes[n:]
		}
	}()
}

// willNeed asks the kernel to read the pack bytes of locs, merged into
// runs of adjacent blobs.
func willNeed(pf *packFiles, locs []packLoc) {
	for i := 0; i < len(locs); {
		first := locs[i]
		end := first.offset + int64(first.length)
		j := i + 1
		for j < len(locs) && locs[j].pack == first.pack && locs[j].offset == end {
			end += int64(locs[j].length)
			j++
		}
		pf.willNeed(first.pack, first.offset, end-first.offset)
		i = j
	}
}

// Close closes the pack files the reader opened (not the Client).
func (r *PackReader) Close() {
	r.mu.Lock()
	r.closed = true
	r.ahead = map[image.Hash]packLoc{}
	r.room.Broadcast()
	r.mu.Unlock()
	r.packs.close()
}
