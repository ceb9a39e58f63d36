package dedup

import (
	"encoding/binary"
	"math/bits"
	"slices"
	"sync"

	"github.com/ckptfs/ckptfs/image"
)

// pageIndex is the set of stored page hashes, in memory, so that Missing
// and PutPages need no Badger look-up (a memtable skiplist or LSM probe of
// ~3 µs a page). It is exact: full 32-byte hashes.
//
// Most hashes live in sorted, sorted entries of hash and location (44
// bytes a page, in fixed-size segments, hashes apart: indexseg.go) found through dir, a
// table of bucket starts by the hash's top bits (2-4 bytes a page): hashes
// are uniform, so a bucket holds one or two entries and a look-up touches
// two or three cache lines. That is ~12 MiB of memory per GiB of distinct
// pages stored (a Go map would take 80 bytes a page). Hashes added since
// the last merge sit in the hash table added (hashtable.go), merged into
// sorted when it grows past an eighth of it (amortised O(1) a page).
//
// The location beside each hash (a slimLoc of 12 bytes: the pack by its
// number in packs) lets ReadPage and ReadPages go without a Badger
// look-up either. A zero packLoc (pack 0, never a pack's id) means "not
// known here": the reader asks Badger.
//
// The index must never say "stored" for a page that is not: PutPages adds
// pages once they are in the open pack (sealed and indexed in Badger by
// the next Commit, which a reference to them needs), a failed seal and GC
// remove them.
type pageIndex struct {
	mu     sync.RWMutex
	sorted segments
	dir    []uint32 // dir[b] = first i with top(sorted[i]) >= b; len 1<<shift + 1
	shift  uint     // bits of top
	added  hashTable
	packs  packTable
	wide   map[image.Hash]packLoc // locations too wide for a slimLoc (none in practice)
}

// minMerge is the size of added below which it is never merged.
const minMerge = 1 << 16

// newPageIndex returns an index of sorted, which must be sorted and
// without duplicates (Badger key order), with the locations locs (nil:
// none known).
func newPageIndex(sorted []image.Hash, locs []packLoc) *pageIndex {
	x := &pageIndex{}
	x.sorted.resize(len(sorted))
	for i, h := range sorted {
		var l packLoc
		if locs != nil {
			l = locs[i]
		}
		x.sorted.set(i, indexEntry{hash: h, loc: x.slim(h, l)})
	}
	x.setDir()
	return x
}

// slim returns the slimLoc to keep for page h at l. x.mu must be held for
// writing (or x not shared yet).
func (x *pageIndex) slim(h image.Hash, l packLoc) slimLoc {
	if s, ok := x.packs.slim(l); ok {
		return s
	}
	if x.wide == nil {
		x.wide = make(map[image.Hash]packLoc)
	}
	x.wide[h] = l
	return slimLoc{flags: slimWide}
}

// loc returns the location s of page h stands for.
func (x *pageIndex) loc(h image.Hash, s slimLoc) packLoc {
	if s.flags == slimWide {
		return x.wide[h]
	}
	return x.packs.wide(s)
}

// setDir rebuilds dir for sorted.
func (x *pageIndex) setDir() {
	n := x.sorted.n
	// One or two entries a bucket: 2^shift ≥ n/2 buckets, at least 2.
	x.shift = uint(max(1, bits.Len(uint(n/2))))
	x.shift = min(x.shift, 30)
	if len(x.dir) != 1<<x.shift+1 {
		x.dir = make([]uint32, 1<<x.shift+1)
	}
	b := 0
	for i := 0; i < n; i++ {
		t := x.top(*x.sorted.hash(i))
		for b <= t {
			x.dir[b] = uint32(i)
			b++
		}
	}
	for ; b < len(x.dir); b++ {
		x.dir[b] = uint32(n)
	}
}

func (x *pageIndex) top(h image.Hash) int {
	return int(binary.BigEndian.Uint64(h[:8]) >> (64 - x.shift))
}

func (x *pageIndex) has(h image.Hash) bool {
	if _, ok := x.added.get(h); ok {
		return true
	}
	return x.findSorted(h) >= 0
}

// find returns the location of h. x.mu must be held.
func (x *pageIndex) find(h image.Hash) (packLoc, bool) {
	if l, ok := x.added.get(h); ok {
		return x.loc(h, l), true
	}
	if i := x.findSorted(h); i >= 0 {
		return x.loc(h, *x.sorted.loc(i)), true
	}
	return packLoc{}, false
}

// findSorted returns the position of h in sorted (-1: none).
func (x *pageIndex) findSorted(h image.Hash) int {
	t := x.top(h)
	for i, end := int(x.dir[t]), int(x.dir[t+1]); i < end; i++ {
		if x.sorted.hashes[i>>segShift][i&segMask] == h {
			return i
		}
	}
	return -1
}

// lookup returns where page h is, if the index knows.
func (x *pageIndex) lookup(h image.Hash) (packLoc, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	l, ok := x.find(h)
	return l, ok && l.pack != 0
}

// relocate records new locations of pages in the index (GC moved them).
func (x *pageIndex) relocate(entries []packEntry) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range entries {
		var at *slimLoc
		if _, ok := x.added.get(e.hash); ok {
			at = x.added.at(e.hash)
		} else if i := x.findSorted(e.hash); i >= 0 {
			at = x.sorted.loc(i)
		} else {
			continue
		}
		if at.flags == slimWide {
			delete(x.wide, e.hash)
		}
		*at = x.slim(e.hash, e.loc)
	}
}

// missing sets miss[i] if hashes[i] is not in the index.
func (x *pageIndex) missing(hashes []image.Hash, miss []bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	for i, h := range hashes {
		miss[i] = !x.has(h)
	}
}

// len returns the number of hashes in the index.
func (x *pageIndex) len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.sorted.n + x.added.len()
}

// add puts hashes (stored at locs; nil: not known) in the index.
func (x *pageIndex) add(hashes []image.Hash, locs []packLoc) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i, h := range hashes {
		if !x.has(h) {
			var l packLoc
			if locs != nil {
				l = locs[i]
			}
			x.added.put(h, x.slim(h, l))
		}
	}
	if x.added.len() >= max(minMerge, x.sorted.n/8) {
		x.merge()
	}
}

// merge moves added into sorted, in place from the end (sorted grows by
// whole segments: nothing it holds is copied elsewhere, and the index
// does not need twice its size while merging). x.mu must be held for
// writing.
func (x *pageIndex) merge() {
	if x.added.len() == 0 {
		return
	}
	add := x.added.entries(make([]indexEntry, 0, x.added.len()))
	slices.SortFunc(add, func(a, b indexEntry) int { return hashLess(a.hash, b.hash) })
	n, m := x.sorted.n, len(add)
	x.sorted.resize(n + m)
	i, j := n-1, m-1
	for k := n + m - 1; j >= 0; k-- {
		if i >= 0 && hashLess(*x.sorted.hash(i), add[j].hash) > 0 {
			x.sorted.set(k, x.sorted.get(i))
			i--
		} else {
			x.sorted.set(k, add[j])
			j--
		}
	}
	x.added.reset()
	x.setDir()
}

// remove takes hashes (sorted) out of the index.
func (x *pageIndex) remove(hashes []image.Hash) {
	if len(hashes) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.merge()
	out, j := 0, 0
	for i := 0; i < x.sorted.n; i++ {
		e := x.sorted.get(i)
		for j < len(hashes) && hashLess(hashes[j], e.hash) < 0 {
			j++
		}
		if j < len(hashes) && hashes[j] == e.hash {
			if e.loc.flags == slimWide {
				delete(x.wide, e.hash)
			}
			continue
		}
		x.sorted.set(out, e)
		out++
	}
	x.sorted.resize(out)
	x.setDir()
}

// removeUnsorted takes hashes (in any order) out of the index.
func (x *pageIndex) removeUnsorted(hashes []image.Hash) {
	hs := slices.Clone(hashes)
	slices.SortFunc(hs, hashLess)
	x.remove(slices.Compact(hs))
}
