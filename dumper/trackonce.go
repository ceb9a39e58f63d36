package dumper

import (
	"fmt"

	"github.com/ckptfs/ckptfs/internal/proc"
)

// The default dump of a large tree (cmd/ckptfs): one pre-copy pass while
// the tree runs (NewTracking, Options.PreCopy), then a final dump that
// freezes it only to copy the pages written since, then the tracking is
// closed. A tree whose private memory is small, in all or per process,
// is copied frozen at once: its copy is shorter than what the pass adds
// (a second freeze and collection, the userfaultfd armed in each process,
// the scan; about 1 ms a process against 0.6 ms a MiB of frozen copy:
// 101 processes of 1 MiB were frozen 129 ms pre-copied, 106 ms not).

// PreCopyMinBytes is the private memory of a tree from which the default
// dump pre-copies it, if its processes have PreCopyMinPerProcess each on
// average.
const (
	PreCopyMinBytes      = 64 << 20
	PreCopyMinPerProcess = 8 << 20
)

// PrivateMemory is the private memory of the tree rooted at root that a
// dump copies (anonymous, in memory or swapped out: RssAnon and VmSwap
// of status, the kernel's counters; smaps_rollup would walk every page
// table, ~10 ms a GiB), read while it runs, and the number of its
// processes.
func PrivateMemory(root int) (bytes int64, procs int, err error) {
	err = walkTree(root, func(pid int) (bool, error) {
		procs++
		b, err := proc.Read(pid, "status")
		if err != nil {
			return true, nil // gone: nothing to copy
		}
		kv := proc.KeyValues(b)
		for _, k := range []string{"RssAnon", "VmSwap"} { // absent for a zombie
			var kib int64
			fmt.Sscanf(kv[k], "%d", &kib)
			bytes += kib << 10
		}
		return true, nil
	})
	return bytes, procs, err
}

// PreCopyWorth says whether the default dump pre-copies a tree of procs
// processes with bytes of private memory ("" if so, else why not).
func PreCopyWorth(bytes int64, procs int) string {
	switch {
	case bytes < PreCopyMinBytes:
		return fmt.Sprintf("%d MiB of private memory, below %d MiB", bytes>>20, PreCopyMinBytes>>20)
	case bytes < int64(procs)*PreCopyMinPerProcess:
		return fmt.Sprintf("%d MiB of private memory over %d processes, below %d MiB a process", bytes>>20, procs, PreCopyMinPerProcess>>20)
	}
	return ""
}
