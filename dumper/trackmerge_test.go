package dumper

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// TestMergeRuns merges copied references into runs as a sort of their
// union would: every index once, in order, each with its own hash.
func TestMergeRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 500 {
		n := 1 + rng.IntN(300)
		var copied []image.PageRef
		var runs [][]image.PageRef
		var want []image.PageRef
		var run []image.PageRef
		for i := range n {
			if rng.IntN(4) == 0 {
				continue // a hole: neither copied nor reused
			}
			r := image.PageRef{Index: uint32(i)}
			r.Hash[0], r.Hash[1] = byte(i), byte(i>>8)
			want = append(want, r)
			if rng.IntN(3) == 0 {
				r.Hash[2] = 1 // copied
				want[len(want)-1] = r
				copied = append(copied, r)
				continue
			}
			run = append(run, r)
			if rng.IntN(8) == 0 {
				runs, run = append(runs, run), nil
			}
		}
		if len(run) > 0 {
			runs = append(runs, run)
		}
		got := mergeRuns(slices.Clone(copied), runs)
		if !slices.Equal(got, want) {
			t.Fatalf("round %d: %d copied, %d runs: merged %d references, want %d", round, len(copied), len(runs), len(got), len(want))
		}
	}
	if got := mergeRuns(nil, nil); len(got) != 0 {
		t.Fatalf("nothing merged into %d references", len(got))
	}
}
