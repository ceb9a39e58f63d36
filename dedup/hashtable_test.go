package dedup

import (
	"math/rand/v2"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// TestHashTable checks the table against a map through puts (with
// growth), updates in place (at), look-ups of absent hashes, twins that share their
// first 8 bytes, and a reset.
func TestHashTable(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var tab hashTable
	model := make(map[image.Hash]slimLoc)
	var all []image.Hash
	for i := range 20000 {
		h := randHash(r)
		if i%5 == 0 && len(all) > 0 {
			h = all[r.IntN(len(all))]
			h[31] ^= 1 // same slot, another hash
		}
		all = append(all, h)
		loc := slimLoc{pack: uint32(i + 1), offset: uint32(i)}
		tab.put(h, loc)
		model[h] = loc
		if i%3 == 0 {
			u := all[r.IntN(len(all))]
			nl := slimLoc{pack: 99, offset: uint32(i)}
			_, in := model[u]
			if _, ok := tab.get(u); ok != in {
				t.Fatalf("get %d: said %v, present %v", i, ok, in)
			}
			if in {
				*tab.at(u) = nl
				model[u] = nl
			}
		}
	}
	if tab.len() != len(model) {
		t.Fatalf("len %d, want %d", tab.len(), len(model))
	}
	for h, want := range model {
		if got, ok := tab.get(h); !ok || got != want {
			t.Fatalf("get %s: %+v %v, want %+v", h, got, ok, want)
		}
	}
	for range 1000 {
		if _, ok := tab.get(randHash(r)); ok {
			t.Fatal("absent hash found")
		}
	}
	if es := tab.entries(nil); len(es) != len(model) {
		t.Fatalf("%d entries, want %d", len(es), len(model))
	}
	tab.reset()
	if _, ok := tab.get(all[0]); ok || tab.len() != 0 {
		t.Fatal("found after reset")
	}
}
