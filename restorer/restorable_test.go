package restorer

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ckptfs/ckptfs/dumper"
)

// The checkpoints this package's end-to-end tests dump (with dumper.Dump,
// in this process) are each checked against restore's tree rules
// (Refusals) by the dump itself, as in tests/ (dumper/restorable.go):
// TestMain arms the check and fails the run if one was refused.

// armRestorable sets CKPTFS_TEST_RESTORABLE for the run; report prints
// the count and says whether every checkpoint passed.
func armRestorable() (report func() bool, cleanup func()) {
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		return func() bool { return true }, func() {} // the check would be timed with the dumps
	}
	dir, err := os.MkdirTemp("", "ckptfs-restorable-")
	if err != nil {
		return func() bool { fmt.Fprintln(os.Stderr, "restorable:", err); return false }, func() {}
	}
	log := filepath.Join(dir, "log")
	os.Setenv(dumper.RestorableEnv, log)
	dumper.RestoreRules = Refusals
	report = func() bool {
		l, err := dumper.ReadRestorableLog(log)
		if err != nil {
			fmt.Fprintln(os.Stderr, "restorable:", err)
			return false
		}
		if l.Checked > 0 {
			fmt.Fprintf(os.Stderr, "restorable: %d checkpoints dumped by the restorer's tests checked against restore's rules, %d refused or unchecked\n", l.Checked, len(l.Bad))
		}
		for _, b := range l.Bad {
			fmt.Fprintln(os.Stderr, "restorable:", b)
		}
		return len(l.Bad) == 0
	}
	return report, func() { os.RemoveAll(dir) }
}
