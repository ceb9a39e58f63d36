package dedup

import (
	"math/rand/v2"
	"testing"
)

// TestPendingSet checks pendingSet against a map under the churn of
// puts and deletes a dump makes, keys that collide in the low bits
// included (they probe through each other's slots).
func TestPendingSet(t *testing.T) {
	var p pendingSet
	want := map[uint64]*putBatch{}
	r := rand.New(rand.NewPCG(1, 2))
	batches := []*putBatch{{}, {}, {}}
	var keys []uint64
	for step := 0; step < 200000; step++ {
		switch op := r.IntN(10); {
		case op < 5 || len(keys) == 0:
			k := r.Uint64()
			if r.IntN(4) == 0 {
				k &^= 1<<20 - 1 // same home slot as many others
			}
			if _, ok := want[k]; ok {
				continue
			}
			b := batches[r.IntN(len(batches))]
			p.put(k, b)
			want[k] = b
			keys = append(keys, k)
		default:
			i := r.IntN(len(keys))
			k := keys[i]
			keys[i] = keys[len(keys)-1]
			keys = keys[:len(keys)-1]
			p.delete(k)
			delete(want, k)
		}
		if step%1000 == 0 {
			for k, b := range want {
				if got := p.get(k); got != b {
					t.Fatalf("step %d: key %#x: got %p, want %p", step, k, got, b)
				}
			}
			if p.n != len(want) {
				t.Fatalf("step %d: %d entries, want %d", step, p.n, len(want))
			}
		}
		if k := r.Uint64(); want[k] == nil && p.get(k) != nil {
			t.Fatalf("step %d: absent key %#x found", step, k)
		}
	}
	for _, k := range keys {
		p.delete(k)
	}
	if p.n != 0 {
		t.Fatalf("%d entries left after deleting all", p.n)
	}
}
