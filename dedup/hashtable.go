package dedup

import (
	"encoding/binary"

	"github.com/ckptfs/ckptfs/image"
)

// hashTable maps page hashes to locations: open addressing with linear
// probing, the slot chosen by the hash's first 8 bytes (hashes are
// uniform). It holds the page index's recent adds (pageIndex.added): a Go
// map with a 32-byte key hashed the key again and compared it twice per
// look-up, some 5 % of a dump's CPU over the three look-ups of a page
// (Missing, PutPages' claim, add). Not safe for concurrent use.
type hashTable struct {
	slots []tableSlot // len a power of 2 (or 0), at most half used
	n     int
}

type tableSlot struct {
	hash image.Hash
	loc  slimLoc // indexseg.go: 12 bytes, a slot 48
	used bool
}

// find returns the slot of h, or of the free slot where it would go.
func (t *hashTable) find(h image.Hash) int {
	mask := len(t.slots) - 1
	i := int(binary.LittleEndian.Uint64(h[:8])) & mask
	for t.slots[i].used && t.slots[i].hash != h {
		i = (i + 1) & mask
	}
	return i
}

// get returns the location of h.
func (t *hashTable) get(h image.Hash) (slimLoc, bool) {
	if t.n == 0 {
		return slimLoc{}, false
	}
	s := &t.slots[t.find(h)]
	return s.loc, s.used
}

// put sets the location of h, adding h if it is not there.
func (t *hashTable) put(h image.Hash, loc slimLoc) {
	if 2*(t.n+1) > len(t.slots) {
		t.grow()
	}
	s := &t.slots[t.find(h)]
	if !s.used {
		s.hash, s.used = h, true
		t.n++
	}
	s.loc = loc
}

// at returns the location of h, which must be there, to change it.
func (t *hashTable) at(h image.Hash) *slimLoc { return &t.slots[t.find(h)].loc }

func (t *hashTable) grow() {
	old := t.slots
	t.slots = make([]tableSlot, max(1024, 2*len(old)))
	t.n = 0
	for i := range old {
		if old[i].used {
			t.put(old[i].hash, old[i].loc)
		}
	}
}

// len returns the number of hashes held.
func (t *hashTable) len() int { return t.n }

// entries appends every hash and its location to es.
func (t *hashTable) entries(es []indexEntry) []indexEntry {
	for i := range t.slots {
		if t.slots[i].used {
			es = append(es, indexEntry{hash: t.slots[i].hash, loc: t.slots[i].loc})
		}
	}
	return es
}

// reset empties the table, keeping its slots.
func (t *hashTable) reset() {
	clear(t.slots)
	t.n = 0
}
