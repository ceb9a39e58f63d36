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
// GiB of distinct pages stored (a Go map would take 80 bytes a page). Hashes added since the last merge sit in the map added, merged
// into sorted when it grows past an eighth of it (amortised O(1) a page).
//
// The index must never say "stored" for a page Badger lacks: PutPages adds
// pages after the write is flushed, GC removes them before deleting.
type pageIndex struct {
	mu     sync.RWMutex
	sorted []image.Hash
	dir    []uint32 // dir[b] = first i with top(sorted[i]) >= b; len 1<<shift + 1
	shift  uint     // bits of top
	added  map[image.Hash]struct{}
}

// minMerge is the size of added below which it is never merged.
const minMerge = 1 << 16

// newPageIndex returns an index of sorted, which must be sorted and
// without duplicates (Badger key order).
func newPageIndex(sorted []image.Hash) *pageIndex {
	x := &pageIndex{added: make(map[image.Hash]struct{})}
	x.setSorted(sorted)
	return x
}

func (x *pageIndex) setSorted(sorted []image.Hash) {
	x.sorted = sorted
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
	if _, ok := x.added[h]; ok {
		return true
	}
	t := x.top(h)
	for _, s := range x.sorted[x.dir[t]:x.dir[t+1]] {
		if s == h {
			return true
		}
	}
	return false
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
	return len(x.sorted) + len(x.added)
}

// add puts hashes (stored in Badger already) in the index.
func (x *pageIndex) add(hashes []image.Hash) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, h := range hashes {
		if !x.has(h) {
			x.added[h] = struct{}{}
		}
	}
	if len(x.added) >= max(minMerge, len(x.sorted)/8) {
		x.merge()
	}
}

// merge moves added into sorted. x.mu must be held for writing.
func (x *pageIndex) merge() {
	if len(x.added) == 0 {
		return
	}
	add := make([]image.Hash, 0, len(x.added))
	for h := range x.added {
		add = append(add, h)
	}
	slices.SortFunc(add, hashLess)
	out := make([]image.Hash, 0, len(x.sorted)+len(add))
	i, j := 0, 0
	for i < len(x.sorted) && j < len(add) {
		if hashLess(x.sorted[i], add[j]) < 0 {
			out = append(out, x.sorted[i])
			i++
		} else {
			out = append(out, add[j])
			j++
		}
	}
	out = append(append(out, x.sorted[i:]...), add[j:]...)
	clear(x.added)
	x.setSorted(out)
}

// remove takes hashes (sorted) out of the index.
func (x *pageIndex) remove(hashes []image.Hash) {
	if len(hashes) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.merge()
	out := x.sorted[:0]
	j := 0
	for _, h := range x.sorted {
		for j < len(hashes) && hashLess(hashes[j], h) < 0 {
			j++
		}
		if j < len(hashes) && hashes[j] == h {
			continue
		}
		out = append(out, h)
	}
	clear(x.sorted[len(out):])
	x.setSorted(out)
}

// removeUnsorted takes hashes (in any order) out of the index.
func (x *pageIndex) removeUnsorted(hashes []image.Hash) {
	hs := slices.Clone(hashes)
	slices.SortFunc(hs, hashLess)
	x.remove(slices.Compact(hs))
}
