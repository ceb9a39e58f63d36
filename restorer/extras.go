package restorer

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ckptfs/ckptfs/internal/inject"
)

// extrasFile is the per-thread file with the state only the thread can
// read (inject.Extras): "key: value" lines altstack_sp, altstack_flags,
// altstack_size, clear_tid, robust_head, robust_len. It is optional: a
// checkpoint without it restores threads with none of that state.
//
// The restorer reads it straight from the tree until image.Thread carries
// these fields (see /work/notes/restorer-requests.md).
const extrasFile = "extras"

func readExtras(dir string, pid, tid int) (inject.Extras, bool, error) {
	var x inject.Extras
	path := filepath.Join(dir, "tasks", strconv.Itoa(pid), "threads", strconv.Itoa(tid), extrasFile)
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return x, false, nil
	}
	if err != nil {
		return x, false, fmt.Errorf("checkpoint file %s: %w", path, err)
	}
	fields := map[string]*uint64{"clear_tid": &x.ClearTID, "robust_head": &x.RobustHead,
		"robust_len": &x.RobustLen, "altstack_sp": &x.AltStack.SP, "altstack_size": &x.AltStack.Size}
	var flags uint64
	fields["altstack_flags"] = &flags
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if p := fields[strings.TrimSpace(k)]; p != nil {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 0, 64)
			if err != nil {
				return x, false, fmt.Errorf("checkpoint file %s: %s: %w", path, k, err)
			}
			*p = n
		}
	}
	x.AltStack.Flags = int32(flags)
	return x, true, nil
}
