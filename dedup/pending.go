package dedup

import (
	"encoding/binary"

	"github.com/ckptfs/ckptfs/image"
)

// pendingSet is Store.pending: the PutPages call writing each page, by
// pendingKey. It is an open-addressing table with linear probing and
// backward-shift deletion, so that the churn of a dump (every page put
// in and taken out again, a few thousand at a time) leaves no
// tombstones: a Go map under that churn probed ever longer (its look-ups
// and deletes were 3% of a 1 GiB dump's CPU). Keys are uniform (hash
// bytes). A slot holds key and batch side by side: a page's delete comes
// after its batch was written, its slot long out of the cache, and with
// keys and batches in two arrays it missed twice (1.2-1.8% of a dump's
// CPU in delete alone). Not safe for concurrent use (putMu guards it).
type pendingSet struct {
	slots []pendingSlot
	n     int
}

// pendingSlot is one slot of a pendingSet: b nil if the slot is empty.
type pendingSlot struct {
	key uint64
	b   *putBatch
}

// pendingKey is the key of page h in Store.pending.
func pendingKey(h *image.Hash) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

// minPendingSlots is the least table size (64 KiB): a dump's two
// PutPages calls of 256 pages fill an eighth of it. At half full (1,024
// slots) clusters grew long enough that a put and delete took twice as
// long (20 ns against 10 in a churn benchmark).
const minPendingSlots = 1 << 12

// slot returns the slot of key, or the empty slot where it would go.
func (p *pendingSet) slot(key uint64) int {
	mask := len(p.slots) - 1
	i := int(key) & mask
	for p.slots[i].b != nil && p.slots[i].key != key {
		i = (i + 1) & mask
	}
	return i
}

// get returns the batch writing the page of key (nil: none).
func (p *pendingSet) get(key uint64) *putBatch {
	if p.n == 0 {
		return nil
	}
	return p.slots[p.slot(key)].b
}

// put records that b writes the page of key (not in the set).
func (p *pendingSet) put(key uint64, b *putBatch) {
	if (p.n+1)*2 > len(p.slots) {
		p.grow()
	}
	p.slots[p.slot(key)] = pendingSlot{key, b}
	p.n++
}

// grow doubles the table (or makes the first one).
func (p *pendingSet) grow() {
	old := p.slots
	p.slots = make([]pendingSlot, max(2*len(old), minPendingSlots))
	for _, s := range old {
		if s.b != nil {
			p.slots[p.slot(s.key)] = s
		}
	}
}

// delete takes key out of the set, if there.
func (p *pendingSet) delete(key uint64) {
	if p.n == 0 {
		return
	}
	j := p.slot(key)
	if p.slots[j].b == nil {
		return
	}
	mask := len(p.slots) - 1
	// Backward shift: the entries after j that probing reached through
	// it move back, so that no look-up stops short at the hole.
	for k := (j + 1) & mask; p.slots[k].b != nil; k = (k + 1) & mask {
		home := int(p.slots[k].key) & mask
		if (k-home)&mask < (k-j)&mask {
			continue // its home is cyclically in (j, k]: it stays
		}
		p.slots[j] = p.slots[k]
		j = k
	}
	p.slots[j] = pendingSlot{}
	p.n--
}
