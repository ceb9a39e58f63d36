package dedup

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/directio"
	"golang.org/x/sys/unix"
)

// packTarget is the size at which a pack is sealed and the next one begun:
// large enough that a GiB dump makes a few dozen files, small enough that
// gc rewrites little to free a mostly dead pack.
const packTarget = 32 << 20

// maxIOV is the most blobs one pwritev(2) writes (IOV_MAX is 1024).
const maxIOV = 1024

// packWriter appends blobs to one new pack. Blobs are not copied: add
// records them and flush writes them with pwritev(2), so the caller must
// call flush before it reuses a blob's memory (writePages does, before it
// returns). It is not safe for concurrent use (the Store's packMu guards
// it).
//
// Where the file system takes O_DIRECT, blobs are written through a
// second descriptor opened with it whenever they allow (whole pages at
// page-aligned addresses and offsets: a dump's chunk buffers and mapped
// spill file always do): the kernel then moves them from the dumper's
// memory to the disk without copying them into the page cache, which cost
// 20-50 % of a dump's CPU (copy_folio_from_iter). For that the header is
// followed by zeros up to the first page boundary (blobs start at
// directio.Align; a reader finds them by their offsets as ever, so the
// pack format does not change). Other blobs (compressed, or pages at odd
// addresses from a socket client) go through the page cache as before.
// The seal's fsync makes both kinds durable.
type packWriter struct {
	id      packID
	path    string
	f       *os.File
	direct  int      // the pack opened with O_DIRECT; -1: none
	iov     [][]byte // added, not yet written
	pending int64    // their bytes
	written int64    // bytes written to f
	// enc is the trailer's encoding of the blobs added so far (48 bytes
	// each, appendEntries), n their number: finish appends the footer.
	// It is the index record's encoding too (see indexRecord), and the
	// only list of the pack's entries: a []packEntry beside it was
	// another 56 bytes a page.
	enc []byte
	n   int
}

// packBuffers is the memory a pack's writer needs besides its blobs: the
// encoding of its entries (the trailer's, which is the index record's
// too: 384 KiB for a full pack) and the iovec. A store reuses them from
// one sealed pack to the next (Store.putPackBuffersLocked): fresh memory
// costs a page fault a page (~10 us on a VM), and a GiB dump made ~32
// sets of them (with a []packEntry and a second encoding, 1.2 MiB a
// pack), all garbage a pack later.
type packBuffers struct {
	enc []byte
	iov [][]byte
}

// packEncCap is the encoding of a full pack's entries and footer (one
// more entry than packTarget's pages: a pack is sealed once it reaches
// packTarget).
const packEncCap = (packTarget/image.PageSize+1)*packEntrySize + packFooterSize

// createPack starts a new pack in the store at dir.
func createPack(dir string) (*packWriter, error) { return createPackWith(dir, packBuffers{}) }

// createPackWith starts a new pack in the store at dir, with the buffers
// buf (those of a sealed pack, or none).
func createPackWith(dir string, buf packBuffers) (*packWriter, error) {
	if err := os.MkdirAll(dir+"/"+packDir, 0o700); err != nil {
		return nil, fmt.Errorf("create pack directory: %w", err)
	}
	for range 4 {
		id := newPackID()
		path := packPath(dir, id)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if os.IsExist(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create pack: %w", err)
		}
		// Room for a full pack's entries and a pwritev's blobs from the
		// start: grown by append they were copied over and over (1% of
		// a dump's CPU).
		if cap(buf.enc) < packEncCap {
			buf.enc = make([]byte, 0, packEncCap)
		}
		if cap(buf.iov) < maxIOV {
			buf.iov = make([][]byte, 0, maxIOV)
		}
		w := &packWriter{id: id, path: path, f: f, direct: -1, iov: buf.iov[:0], enc: buf.enc[:0]}
		head := packHeader()
		if fd, err := unix.Open(path, unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0); err == nil {
			w.direct = fd
			head = append(head, make([]byte, directio.Align-len(head))...)
		}
		w.iov, w.pending = append(w.iov, head), int64(len(head))
		return w, nil
	}
	return nil, fmt.Errorf("create pack: no free name")
}

// size is the bytes of the pack so far.
func (w *packWriter) size() int64 { return w.written + w.pending }

// add appends blob, the stored form of page h, and returns where it is.
func (w *packWriter) add(h image.Hash, blob []byte, flags uint32) (packLoc, error) {
	loc := packLoc{pack: w.id, offset: w.size(), length: uint32(len(blob)), flags: flags}
	if len(w.iov) == maxIOV {
		if err := w.flush(); err != nil {
			return packLoc{}, err
		}
	}
	w.iov, w.pending = appendBlob(w.iov, blob), w.pending+int64(len(blob))
	w.enc, w.n = appendEntry(w.enc, h, loc), w.n+1
	return loc, nil
}

// appendBlob adds blob to iov: as a longer last element when it follows
// that element in memory (the pages of a dump's chunk buffer do), so a
// chunk goes to the kernel as one segment, not one per page.
func appendBlob(iov [][]byte, blob []byte) [][]byte {
	if n := len(iov); n > 0 && len(blob) > 0 {
		last := iov[n-1]
		if l := len(last); l > 0 && cap(last)-l >= len(blob) && &last[:l+1][l] == &blob[0] {
			iov[n-1] = last[:l+len(blob)]
			return iov
		}
	}
	return append(iov, blob)
}

// flush writes the blobs added, in one pwritev(2) if it takes them all:
// with O_DIRECT if they and the offset allow (see packWriter).
func (w *packWriter) flush() error {
	iov := w.iov
	for len(iov) > 0 {
		fd := int(w.f.Fd())
		if w.direct >= 0 && w.written%directio.Align == 0 && directio.Aligned(iov) {
			fd = w.direct
		}
		n, err := unix.Pwritev(fd, iov, w.written)
		if err != nil && fd == w.direct && errors.Is(err, unix.EINVAL) {
			// The file system refuses this direct write after all: no
			// more of them for this pack.
			w.closeDirect()
			continue
		}
		if err != nil {
			return fmt.Errorf("write pack %s: %w", w.id, err)
		}
		if n == 0 {
			return fmt.Errorf("write pack %s: %w", w.id, io.ErrShortWrite)
		}
		w.written += int64(n)
		w.pending -= int64(n)
		for n > 0 {
			if n >= len(iov[0]) {
				n -= len(iov[0])
				iov = iov[1:]
				continue
			}
			iov[0] = iov[0][n:]
			n = 0
		}
	}
	clear(w.iov)
	w.iov = w.iov[:0]
	return nil
}

// finish writes the trailer, fsyncs and closes the pack, and returns its
// entries. The pack's directory entry is made durable too.
func (w *packWriter) finish() ([]packEntry, error) {
	if err := w.seal(); err != nil {
		return nil, err
	}
	return w.entries(), nil
}

// seal is finish without the entries: the trailer is left in w.enc (see
// indexRecord).
func (w *packWriter) seal() error {
	w.enc = appendTrailerFooter(w.enc[:w.n*packEntrySize], w.n)
	w.iov, w.pending = append(w.iov, w.enc), w.pending+int64(len(w.enc))
	if err := w.flush(); err != nil {
		return err
	}
	w.closeDirect()
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("sync pack %s: %w", w.id, err)
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close pack %s: %w", w.id, err)
	}
	if err := syncDir(w.path[:len(w.path)-len(w.id.String()+packExt)]); err != nil {
		return fmt.Errorf("sync pack directory: %w", err)
	}
	return nil
}

// entries returns the entries added (decoded from w.enc).
func (w *packWriter) entries() []packEntry {
	es := make([]packEntry, w.n)
	for i := range es {
		es[i] = decodeEntry(w.enc[i*packEntrySize:], w.id)
	}
	return es
}

// hash returns the hash of the i'th blob added.
func (w *packWriter) hash(i int) image.Hash {
	return image.Hash(w.enc[i*packEntrySize : i*packEntrySize+32])
}

// indexRecord returns the pack's index record (packindex.go), made from
// the trailer finish left in w.enc: both begin with the same encoding of
// the entries, so only the footer is written anew (in place: the trailer
// is on disk by then).
func (w *packWriter) indexRecord() []byte {
	w.enc = appendPackIndexFooter(w.enc[:w.n*packEntrySize], w.id, w.n)
	return w.enc
}

// buffers takes the writer's buffers, for another pack (see packBuffers):
// w must be done with them (sealed and indexed, or given up).
func (w *packWriter) buffers() packBuffers {
	b := packBuffers{enc: w.enc[:0], iov: w.iov[:0]}
	w.enc, w.iov, w.n = nil, nil, 0
	return b
}

// abort closes and removes the pack.
func (w *packWriter) abort() {
	w.closeDirect()
	w.f.Close()
	os.Remove(w.path)
}

// closeDirect closes the O_DIRECT descriptor, if any.
func (w *packWriter) closeDirect() {
	if w.direct >= 0 {
		unix.Close(w.direct)
		w.direct = -1
	}
}
