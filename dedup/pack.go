package dedup

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ckptfs/ckptfs/image"
)

// A pack file holds many pages, append-only (after restic's packs):
//
//	header   16 bytes: "ckptfs-pack\x00" + version u32 (1)
//	blobs    the stored bytes of each page, one after the other
//	trailer  one entry per blob, 48 bytes: hash 32, offset u64, length u32,
//	         flags u32 (see blobFlag*)
//	footer   48 bytes: entries u64, BLAKE3-256 of the entries 32,
//	         "ckptpend"
//
// Numbers are big-endian. A pack is written sequentially with write(2),
// fsynced once whole, and never changed afterwards; Badger's p/<hash>
// entries (packLoc) point into it. The trailer repeats the index so that
// verify and repair can check and rebuild it from the packs alone. A pack
// is the unit of gc: it is dropped when none of its pages is referenced,
// rewritten (its live pages copied to a new pack) when most are not.
//
// Packs live in STORE/packs/<16 hex digits>.pack; the name is random, so
// an id is never reused.

const (
	packHeaderSize = 16
	packEntrySize  = 48
	packFooterSize = 48
	packVersion    = 1
	packDir        = "packs"
	packExt        = ".pack"
)

var (
	packMagic    = []byte("ckptfs-pack\x00")
	packEndMagic = []byte("ckptpend")
)

// blob flags (packLoc.flags and the trailer's flags).
const (
	blobS2 uint32 = 1 << iota // the blob is the page compressed with s2
)

// packID names a pack file.
type packID uint64

func (p packID) String() string { return fmt.Sprintf("%016x", uint64(p)) }

func newPackID() packID {
	var b [8]byte
	rand.Read(b[:])
	return packID(binary.BigEndian.Uint64(b[:]) | 1) // never 0
}

func packPath(dir string, id packID) string {
	return filepath.Join(dir, packDir, id.String()+packExt)
}

// parsePackName returns the id of a pack file name.
func parsePackName(name string) (packID, bool) {
	s, ok := strings.CutSuffix(name, packExt)
	if !ok || len(s) != 16 {
		return 0, false
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return 0, false
	}
	return packID(binary.BigEndian.Uint64(b)), true
}

// packLoc is where a page is stored: the value of its p/<hash> key.
//
//	pack u64, offset u64, length u32, flags u32   (24 bytes)
type packLoc struct {
	pack   packID
	offset int64
	length uint32
	flags  uint32
}

const packLocSize = 24

// decodePackLoc reads a format-3 page location (`p/<hash>` values, read
// by migrate and repair).
func decodePackLoc(b []byte) (packLoc, error) {
	if len(b) != packLocSize {
		return packLoc{}, fmt.Errorf("%w: page location of %d bytes", ErrPageCorrupt, len(b))
	}
	l := packLoc{pack: packID(binary.BigEndian.Uint64(b)), offset: int64(binary.BigEndian.Uint64(b[8:])),
		length: binary.BigEndian.Uint32(b[16:]), flags: binary.BigEndian.Uint32(b[20:])}
	if l.length == 0 || l.length > image.PageSize || l.offset < packHeaderSize || l.flags&^blobS2 != 0 {
		return packLoc{}, fmt.Errorf("%w: bad page location %+v", ErrPageCorrupt, l)
	}
	return l, nil
}

// packEntry is one trailer entry.
type packEntry struct {
	hash image.Hash
	loc  packLoc
}

func packHeader() []byte {
	b := append([]byte(nil), packMagic...)
	return binary.BigEndian.AppendUint32(b, packVersion)
}

// encodeTrailer returns the trailer and footer of a pack holding entries.
func encodeTrailer(entries []packEntry) []byte {
	b := appendEntries(make([]byte, 0, len(entries)*packEntrySize+packFooterSize), entries)
	return appendTrailerFooter(b, len(entries))
}

// appendTrailerFooter appends to b, the encoding of n entries, the
// trailer's footer.
func appendTrailerFooter(b []byte, n int) []byte {
	sum := Sum(b)
	b = binary.BigEndian.AppendUint64(b, uint64(n))
	b = append(b, sum[:]...)
	return append(b, packEndMagic...)
}

// errNoTrailer says a pack has no whole trailer (a write was cut short).
var errNoTrailer = errors.New("pack has no trailer")

// readTrailer reads the entries of pack id from its trailer and checks
// them: header, footer hash, blobs inside the blob area.
func readTrailer(f *os.File, id packID) ([]packEntry, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size < packHeaderSize+packFooterSize {
		return nil, errNoTrailer
	}
	head := make([]byte, packHeaderSize)
	if _, err := f.ReadAt(head, 0); err != nil {
		return nil, err
	}
	if !bytes.Equal(head[:len(packMagic)], packMagic) {
		return nil, fmt.Errorf("%w: pack %s: bad header", ErrCorrupt, id)
	}
	if v := binary.BigEndian.Uint32(head[len(packMagic):]); v != packVersion {
		return nil, fmt.Errorf("%w: pack %s: version %d", ErrCorrupt, id, v)
	}
	foot := make([]byte, packFooterSize)
	if _, err := f.ReadAt(foot, size-packFooterSize); err != nil {
		return nil, err
	}
	if !bytes.Equal(foot[40:], packEndMagic) {
		return nil, errNoTrailer
	}
	n := binary.BigEndian.Uint64(foot)
	tsize := int64(n) * packEntrySize
	if n > uint64(size)/packEntrySize || tsize > size-packHeaderSize-packFooterSize {
		return nil, fmt.Errorf("%w: pack %s: trailer of %d entries", ErrCorrupt, id, n)
	}
	tb := make([]byte, tsize)
	if _, err := f.ReadAt(tb, size-packFooterSize-tsize); err != nil {
		return nil, err
	}
	if Sum(tb) != image.Hash(foot[8:40]) {
		return nil, fmt.Errorf("%w: pack %s: trailer hash mismatch", ErrCorrupt, id)
	}
	return decodeEntries(tb, id, size-packFooterSize-tsize)
}

// listPacks returns the ids of the pack files of the store at dir.
func listPacks(dir string) ([]packID, error) {
	ents, err := os.ReadDir(filepath.Join(dir, packDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []packID
	for _, e := range ents {
		if id, ok := parsePackName(e.Name()); ok && e.Type().IsRegular() {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// syncDir fsyncs a directory (so that file creations and removals in it
// are durable).
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
