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
// bytes). Not safe for concurrent use (putMu guards it).
type pendingSet struct {
	keys    []uint64
	batches []*putBatch // nil: the slot is empty
	n       int
}

// pendingKey is the key of page h in Store.pending.
func pendingKey(h *image.Hash) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

const minPendingSlots = 1 << 12

// slot returns the slot of key, or the empty slot where it would go.
func (p *pendingSet) slot(key uint64) int {
	mask := len(p.keys) - 1
	i := int(key) & mask
	for p.batches[i] != nil && p.keys[i] != key {
		i = (i + 1) & mask
	}
	return i
}

// get returns the batch writing the page of key (nil: none).
func (p *pendingSet) get(key uint64) *putBatch {
	if p.n == 0 {
		return nil
	}
	return p.batches[p.slot(key)]
}

// put records that b writes the page of key (not in the set).
func (p *pendingSet) put(key uint64, b *putBatch) {
	if (p.n+1)*2 > len(p.keys) {
		p.grow()
	}
	i := p.slot(key)
	p.keys[i], p.batches[i] = key, b
	p.n++
}

// grow doubles the table (or makes the first one).
func (p *pendingSet) grow() {
	keys, batches := p.keys, p.batches
	size := max(2*len(keys), minPendingSlots)
	p.keys, p.batches = make([]uint64, size), make([]*putBatch, size)
	for i, b := range batches {
		if b != nil {
			j := p.slot(keys[i])
			p.keys[j], p.batches[j] = keys[i], b
		}
	}
}

// delete takes key out of the set, if there.
func (p *pendingSet) delete(key uint64) {
	if p.n == 0 {
		return
	}
	j := p.slot(key)
	if p.batches[j] == nil {
		return
	}
	mask := len(p.keys) - 1
	// Backward shift: the entries after j that probing reached through
	// it move back, so that no look-up stops short at the hole.
	for k := (j + 1) & mask; p.batches[k] != nil; k = (k + 1) & mask {
		home := int(p.keys[k]) & mask
		if (k-home)&mask < (k-j)&mask {
			continue // its home is cyclically in (j, k]: it stays
		}
		p.keys[j], p.batches[j] = p.keys[k], p.batches[k]
		j = k
	}
	p.keys[j], p.batches[j] = 0, nil
	p.n--
}
