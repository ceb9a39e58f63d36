package dumper

import (
	"fmt"

	"github.com/ckptfs/ckptfs/internal/proc"
)

// The default dump of a large tree (cmd/ckptfs): one pre-copy pass while
// the tree runs (NewTracking, Options.PreCopy), then a final dump that
// freezes it only to copy the pages written since, then the tracking is
// closed. A tree whose private memory is small is copied frozen at once:
// its copy is shorter than the pass's extra freeze and collection.

// PreCopyMinBytes is the private memory of a tree from which the default
// dump pre-copies it.
const PreCopyMinBytes = 64 << 20

// PrivateMemory is the private memory of the tree rooted at root that a
// dump copies (anonymous, in memory or swapped out, from smaps_rollup),
// read while it runs.
func PrivateMemory(root int) (int64, error) {
	var total int64
	err := walkTree(root, func(pid int) (bool, error) {
		b, err := proc.Read(pid, "smaps_rollup")
		if err != nil {
			return true, nil // a zombie, or gone: nothing to copy
		}
		kv := proc.KeyValues(b)
		for _, k := range []string{"Anonymous", "Swap"} {
			var kib int64
			fmt.Sscanf(kv[k], "%d", &kib)
			total += kib << 10
		}
		return true, nil
	})
	return total, err
}
