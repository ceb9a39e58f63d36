package dedup

import (
	"encoding/binary"
	"sync"

	"github.com/ckptfs/ckptfs/image"
)

// pageIndex is the set of stored page hashes, in memory, so that Missing
// and PutPages need no Badger look-up (a memtable skiplist or LSM probe of
// ~3 µs a page). It is exact: full 32-byte hashes.
//
// The entries (hash and location, 44 bytes a page, in fixed-size segments,
// hashes apart: indexseg.go) are kept in the order they came, and found
// through tab, an open-addressing table of 4-byte slots with linear
// probing, the home slot chosen by the hash's first 8 bytes (hashes are
// uniform). A slot holds the entry's number plus one in its low bits (0:
// empty) and, in the bits the number does not need, a tag of the hash's
// next bytes: a look-up of an absent page (every page of a first dump)
// reads one or two slots of one cache line and no entry, a present page's
// one entry. Adds go straight in (amortised O(1), no sort nor merge: a
// sort and merge of each eighth's adds into sorted entries took ~15 % of a
// dump's store CPU). The table is kept between 3/8 and 3/4 full, 5-11
// bytes a page: with the entries, at most ~55 bytes a page (the sorted
// index with its hash table of recent adds took 58-72).
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
	mu    sync.RWMutex
	ents  segments
	tab   []uint32 // len 1<<bits
	bits  uint     // log2 len(tab): the low bits of a slot are an entry number + 1
	packs packTable
	wide  map[image.Hash]packLoc // locations too wide for a slimLoc (none in practice)
	// warmed keeps what add's warm read (see warm).
	warmed uint32
}

// Table sizes: at least 1<<minTabBits slots; at most 1<<maxTabBits (a tag
// of at least one bit), past 3/4 of which the table fills up instead of
// growing (1.6 billion pages, 6 TiB: never in practice).
const (
	minTabBits = 10
	maxTabBits = 31
)

// newPageIndex returns an index of hashes, which must be without
// duplicates, with the locations locs (nil: none known).
func newPageIndex(hashes []image.Hash, locs []packLoc) *pageIndex {
	x := &pageIndex{}
	x.ents.resize(len(hashes))
	for i, h := range hashes {
		var l packLoc
		if locs != nil {
			l = locs[i]
		}
		x.ents.set(i, indexEntry{hash: h, loc: x.slim(h, l)})
	}
	x.rebuild(len(hashes))
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

// tabBits returns the table size (log2) for n entries: the least at which
// they fill at most 3/8 of it.
func tabBits(n int) uint {
	b := uint(minTabBits)
	for b < maxTabBits && uint64(n)*8 > 3<<b {
		b++
	}
	return b
}

// rebuild makes tab anew for the entries (1<<bits slots for n entries).
func (x *pageIndex) rebuild(n int) {
	x.bits = tabBits(n)
	x.tab = make([]uint32, 1<<x.bits)
	for i := 0; i < x.ents.n; i++ {
		h := x.ents.hash(i)
		j := x.free(h)
		x.tab[j] = x.tag(h) | uint32(i+1)
	}
}

// home is the slot where probing for h starts.
func (x *pageIndex) home(h *image.Hash) int {
	return int(binary.LittleEndian.Uint64(h[:8]) & (1<<x.bits - 1))
}

// tag is h's tag in a slot's high bits (the low bits zero).
func (x *pageIndex) tag(h *image.Hash) uint32 {
	return binary.LittleEndian.Uint32(h[8:12]) &^ (1<<x.bits - 1)
}

// slot returns the slot of h (-1: h is not in the index).
func (x *pageIndex) slot(h *image.Hash) int {
	if x.tab == nil {
		return -1
	}
	mask := 1<<x.bits - 1
	t, low := x.tag(h), uint32(mask)
	for i := x.home(h); ; i = (i + 1) & mask {
		s := x.tab[i]
		if s == 0 {
			return -1
		}
		if s&^low == t && *x.ents.hash(int(s&low) - 1) == *h {
			return i
		}
	}
}

// free returns the first empty slot from h's home on.
func (x *pageIndex) free(h *image.Hash) int {
	mask := 1<<x.bits - 1
	i := x.home(h)
	for x.tab[i] != 0 {
		i = (i + 1) & mask
	}
	return i
}

// entry returns the number of h's entry (-1: none). x.mu must be held.
func (x *pageIndex) entry(h *image.Hash) int {
	if j := x.slot(h); j >= 0 {
		return int(x.tab[j]&(1<<x.bits-1)) - 1
	}
	return -1
}

func (x *pageIndex) has(h *image.Hash) bool { return x.slot(h) >= 0 }

// find returns the location of h. x.mu must be held.
func (x *pageIndex) find(h image.Hash) (packLoc, bool) {
	if i := x.entry(&h); i >= 0 {
		return x.loc(h, *x.ents.loc(i)), true
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
		i := x.entry(&e.hash)
		if i < 0 {
			continue
		}
		at := x.ents.loc(i)
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
	for i := range hashes {
		miss[i] = !x.has(&hashes[i])
	}
}

// len returns the number of hashes in the index.
func (x *pageIndex) len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.ents.n
}

// warm reads the home slot of page h (and, if its tag is h's, the entry's
// hash) and returns what it read, for the caller to keep (so the reads are
// not dropped as dead). A batch's slots and entries are out of the cache
// (the table is MiBs, and reached at random): warming all of a batch's
// before looking any up lets the CPU wait for many misses at once, not
// one after the other (pageIndex look-ups were 5% of a dump's CPU, nearly
// all in cache misses). x.mu must be held.
func (x *pageIndex) warm(h *image.Hash) uint32 {
	if x.tab == nil {
		return 0
	}
	s := x.tab[x.home(h)]
	if low := uint32(1<<x.bits - 1); s != 0 && s&^low == x.tag(h) {
		s += uint32(x.ents.hash(int(s&low) - 1)[0])
	}
	return s
}

// add puts hashes (stored at locs; nil: not known) in the index.
func (x *pageIndex) add(hashes []image.Hash, locs []packLoc) {
	x.mu.Lock()
	defer x.mu.Unlock()
	var w uint32
	for i := range hashes {
		w += x.warm(&hashes[i])
	}
	x.warmed = w
	for i := range hashes {
		var l packLoc
		if locs != nil {
			l = locs[i]
		}
		x.insert(&hashes[i], l)
	}
}

// insert adds h at l unless it is there. x.mu must be held for writing.
func (x *pageIndex) insert(h *image.Hash, l packLoc) {
	if x.tab == nil {
		x.rebuild(0)
	}
	n := x.ents.n
	if uint64(n+1)*4 > 3<<x.bits && x.bits < maxTabBits {
		if x.has(h) {
			return
		}
		// Sized for the n entries there (3/4 of the table): twice the
		// slots, 3/8 full. Sized for n+1 it was 4 times (the least
		// table that n+1 fill at most 3/8 of), so a 1 GiB dump's index
		// ended in 1M slots (4 MiB) a quarter full, not 512K.
		x.rebuild(n)
	}
	// One probe finds h or the slot it goes in (a look-up and then a
	// search for a free slot read the same slots twice).
	j, found := x.place(h)
	if found {
		return
	}
	x.ents.grow(n + 1)
	x.ents.set(n, indexEntry{hash: *h, loc: x.slim(*h, l)})
	x.tab[j] = x.tag(h) | uint32(n+1)
}

// place returns the slot of h (true), or the empty slot where probing for
// h stops (false): where h goes.
func (x *pageIndex) place(h *image.Hash) (int, bool) {
	mask := 1<<x.bits - 1
	t, low := x.tag(h), uint32(mask)
	for i := x.home(h); ; i = (i + 1) & mask {
		s := x.tab[i]
		if s == 0 {
			return i, false
		}
		if s&^low == t && *x.ents.hash(int(s&low) - 1) == *h {
			return i, true
		}
	}
}

// remove takes hashes (in any order) out of the index.
func (x *pageIndex) remove(hashes []image.Hash) {
	if len(hashes) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := range hashes {
		x.delete(&hashes[i])
	}
	if n := x.ents.n; x.bits > tabBits(n) {
		// Far fewer entries than slots now: give the memory back.
		x.ents.resize(n)
		x.rebuild(n)
	}
}

// removeUnsorted takes hashes (in any order) out of the index.
func (x *pageIndex) removeUnsorted(hashes []image.Hash) { x.remove(hashes) }

// delete takes h out of the index, if there: its slot is emptied (the
// slots after it that probing reached through it moved back), its entry
// replaced by the last one. x.mu must be held for writing.
func (x *pageIndex) delete(h *image.Hash) {
	j := x.slot(h)
	if j < 0 {
		return
	}
	low := uint32(1<<x.bits - 1)
	i := int(x.tab[j]&low) - 1
	if x.ents.loc(i).flags == slimWide {
		delete(x.wide, *h)
	}
	// Backward-shift deletion (linear probing needs no tombstones).
	mask := 1<<x.bits - 1
	for k := (j + 1) & mask; x.tab[k] != 0; k = (k + 1) & mask {
		kh := x.ents.hash(int(x.tab[k]&low) - 1)
		home := x.home(kh)
		// The entry at k stays if its home is cyclically in (j, k].
		if (k-home)&mask < (k-j)&mask {
			continue
		}
		x.tab[j] = x.tab[k]
		j = k
	}
	x.tab[j] = 0
	// The last entry takes the place of the removed one.
	last := x.ents.n - 1
	if i != last {
		e := x.ents.get(last)
		x.ents.set(i, e)
		ls := x.slot(&e.hash)
		x.tab[ls] = x.tab[ls]&^low | uint32(i+1)
	}
	x.ents.set(last, indexEntry{})
	x.ents.n--
}
