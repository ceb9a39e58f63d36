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
// Most hashes live in sorted, a sorted slice (32 bytes a page) found
// through dir, a table of bucket starts by the hash's top bits (2-4 bytes a
// page): hashes are uniform, so a bucket holds one or two entries and a
// look-up touches two or three cache lines. That is ~9 MiB of memory per
// GiB of distinct pages stored (a Go map would take 80 bytes a page).
// Hashes added since the last merge sit in the hash table added
// (hashtable.go), merged into sorted when it grows past an eighth of it
// (amortised O(1) a page).
//
// Beside each hash it keeps where the page is (locs, parallel to sorted;
// 24 bytes a page), so that ReadPage and ReadPages need no Badger look-up
// either. A zero packLoc (pack 0, never a pack's id) means "not known
// here": the reader asks Badger.
//
// The index must never say "stored" for a page that is not: PutPages adds
// pages once they are in the open pack (sealed and indexed in Badger by
// the next Commit, which a reference to them needs), a failed seal and GC
// remove them.
type pageIndex struct {
	mu     sync.RWMutex
	sorted []image.Hash
	locs   []packLoc
	dir    []uint32 // dir[b] = first i with top(sorted[i]) >= b; len 1<<shift + 1
	shift  uint     // bits of top
	added  hashTable
}

// minMerge is the size of added below which it is never merged.
const minMerge = 1 << 16

// newPageIndex returns an index of sorted, which must be sorted and
// without duplicates (Badger key order), with the locations locs (nil:
// none known).
func newPageIndex(sorted []image.Hash, locs []packLoc) *pageIndex {
	x := &pageIndex{}
	if locs == nil {
		locs = make([]packLoc, len(sorted))
	}
	x.setSorted(sorted, locs)
	return x
}

func (x *pageIndex) setSorted(sorted []image.Hash, locs []packLoc) {
	x.sorted, x.locs = sorted, locs
	// One or two entries a bucket: 2^shift ≥ n/2 buckets, at least 2.
	x.shift = uint(max(1, bits.Len(uint(len(sorted)/2))))
	x.shift = min(x.shift, 30)
	x.dir = make([]uint32, 1<<x.shift+1)
	b := 0
	for i, h := range sorted {
		t := x.top(h)
		for b <= t {
			x.dir[b] = uint32(i)
			b++
		}
	}
	for ; b < len(x.dir); b++ {
		x.dir[b] = uint32(len(sorted))
	}
}

func (x *pageIndex) top(h image.Hash) int {
	return int(binary.BigEndian.Uint64(h[:8]) >> (64 - x.shift))
}

func (x *pageIndex) has(h image.Hash) bool {
	_, ok := x.find(h)
	return ok
}

// find returns the location of h. x.mu must be held.
func (x *pageIndex) find(h image.Hash) (packLoc, bool) {
	if l, ok := x.added.get(h); ok {
		return l, true
	}
	t := x.top(h)
	for i := x.dir[t]; i < x.dir[t+1]; i++ {
		if x.sorted[i] == h {
			return x.locs[i], true
		}
	}
	return packLoc{}, false
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
		if x.added.update(e.hash, e.loc) {
			continue
		}
		t := x.top(e.hash)
		for i := x.dir[t]; i < x.dir[t+1]; i++ {
			if x.sorted[i] == e.hash {
				x.locs[i] = e.loc
			}
		}
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
	return len(x.sorted) + x.added.len()
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
			x.added.put(h, l)
		}
	}
	if x.added.len() >= max(minMerge, len(x.sorted)/8) {
		x.merge()
	}
}

// merge moves added into sorted, in place from the end (the arrays grow
// by append's policy, so a merge copies no more than it must and the
// index does not need twice its size while merging). x.mu must be held
// for writing.
func (x *pageIndex) merge() {
	if x.added.len() == 0 {
		return
	}
	add := x.added.entries(make([]packEntry, 0, x.added.len()))
	slices.SortFunc(add, func(a, b packEntry) int { return hashLess(a.hash, b.hash) })
	n, m := len(x.sorted), len(add)
	sorted := slices.Grow(x.sorted, m)[:n+m]
	locs := slices.Grow(x.locs, m)[:n+m]
	i, j := n-1, m-1
	for k := n + m - 1; j >= 0; k-- {
		if i >= 0 && hashLess(sorted[i], add[j].hash) > 0 {
			sorted[k], locs[k] = sorted[i], locs[i]
			i--
		} else {
			sorted[k], locs[k] = add[j].hash, add[j].loc
			j--
		}
	}
	x.added.reset()
	x.setSorted(sorted, locs)
}

// remove takes hashes (sorted) out of the index.
func (x *pageIndex) remove(hashes []image.Hash) {
	if len(hashes) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.merge()
	out, locs := x.sorted[:0], x.locs[:0]
	j := 0
	for i, h := range x.sorted {
		for j < len(hashes) && hashLess(hashes[j], h) < 0 {
			j++
		}
		if j < len(hashes) && hashes[j] == h {
			continue
		}
		out, locs = append(out, h), append(locs, x.locs[i])
	}
	clear(x.sorted[len(out):])
	x.setSorted(out, locs)
}

// removeUnsorted takes hashes (in any order) out of the index.
func (x *pageIndex) removeUnsorted(hashes []image.Hash) {
	hs := slices.Clone(hashes)
	slices.SortFunc(hs, hashLess)
	x.remove(slices.Compact(hs))
}
