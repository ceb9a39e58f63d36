package dedup

import (
	"github.com/ckptfs/ckptfs/image"
)

// The page index holds its entries compactly (issue 17: its memory is the
// part of a dump's that grows with the process): a location in 12 bytes,
// not 24, the pack named by its number in the index's pack table; the
// sorted entries in segments of a fixed size, so that the array grows by
// whole segments and never by a copy of what it holds (append's 1.25x
// growth of a 2M-entry index had the old and the new array, 270 MiB, alive
// at once).

// slimLoc is a packLoc in 12 bytes: pack is a number of the index's pack
// table (0: no location known), length and flags fit 16 bits each (a blob
// is at most a page). A location that does not fit (offset of 4 GiB or
// more) is kept in the index's wide map, its slimLoc marked slimWide.
type slimLoc struct {
	pack   uint32
	offset uint32
	length uint16
	flags  uint16
}

// slimWide marks a slimLoc whose location is in pageIndex.wide.
const slimWide = 0xffff

// indexEntry is one page of the index: hash and location.
type indexEntry struct {
	hash image.Hash
	loc  slimLoc
}

// segShift sets the entries a segment holds: 32,768 (1.4 MiB).
const (
	segShift = 15
	segLen   = 1 << segShift
	segMask  = segLen - 1
)

// segments is a growable array of entries made of fixed-size pieces, the
// hashes apart from the locations: a look-up that only asks whether a
// page is there reads hashes alone, two to a cache line (44 bytes a page).
type segments struct {
	hashes [][]image.Hash
	locs   [][]slimLoc
	n      int
}

func (s *segments) hash(i int) *image.Hash { return &s.hashes[i>>segShift][i&segMask] }
func (s *segments) loc(i int) *slimLoc     { return &s.locs[i>>segShift][i&segMask] }

func (s *segments) get(i int) indexEntry { return indexEntry{*s.hash(i), *s.loc(i)} }

func (s *segments) set(i int, e indexEntry) { *s.hash(i), *s.loc(i) = e.hash, e.loc }

// grow sets the length to n (at least the present one), adding whole
// segments as needed; it keeps any spare segment.
func (s *segments) grow(n int) {
	for len(s.hashes)*segLen < n {
		s.hashes = append(s.hashes, make([]image.Hash, segLen))
		s.locs = append(s.locs, make([]slimLoc, segLen))
	}
	s.n = n
}

// resize sets the length to n, adding or dropping whole segments.
func (s *segments) resize(n int) {
	for len(s.hashes)*segLen < n {
		s.hashes = append(s.hashes, make([]image.Hash, segLen))
		s.locs = append(s.locs, make([]slimLoc, segLen))
	}
	keep := (n + segMask) >> segShift
	clear(s.hashes[keep:])
	clear(s.locs[keep:])
	s.hashes, s.locs = s.hashes[:keep], s.locs[:keep]
	s.n = n
}

// packTable numbers the packs an index's locations name. Numbers are never
// reused: a store makes few packs (one per 32 MiB stored).
type packTable struct {
	ids []packID          // ids[num]; ids[0] is 0, no pack
	num map[packID]uint32 // the number of each id
	// last is the number of the pack named last (0: none): the pages
	// of a batch are mostly in one pack, so most adds need no map
	// look-up.
	last uint32
}

// slim returns l in 12 bytes (false: it does not fit).
func (p *packTable) slim(l packLoc) (slimLoc, bool) {
	if l.pack == 0 {
		return slimLoc{}, l == packLoc{}
	}
	if l.offset < 0 || l.offset > 1<<32-1 || l.length > 0xffff || l.flags >= slimWide {
		return slimLoc{}, false
	}
	n, ok := p.last, p.last != 0 && p.ids[p.last] == l.pack
	if !ok {
		n, ok = p.num[l.pack]
	}
	if !ok {
		if p.num == nil {
			p.num = make(map[packID]uint32)
			p.ids = []packID{0}
		}
		n = uint32(len(p.ids))
		p.ids = append(p.ids, l.pack)
		p.num[l.pack] = n
	}
	p.last = n
	return slimLoc{pack: n, offset: uint32(l.offset), length: uint16(l.length), flags: uint16(l.flags)}, true
}

// wide returns the packLoc of s (not slimWide).
func (p *packTable) wide(s slimLoc) packLoc {
	if s.pack == 0 {
		return packLoc{}
	}
	return packLoc{pack: p.ids[s.pack], offset: int64(s.offset), length: uint32(s.length), flags: uint32(s.flags)}
}
