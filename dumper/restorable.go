package dumper

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

// With CKPTFS_TEST_RESTORABLE=FILE in the environment (the end-to-end
// tests set it), every checkpoint a dump commits, whatever made it (dump,
// --kill, --track, --every, --pre-copy's last pass, a test calling Dump),
// is loaded back from the store as restore would load it and checked
// against RestoreRules, the rules of restore's preflight that depend on
// the tree alone; one line per checkpoint is appended to FILE:
//
//	ok <id>
//	refused <id> <error, quoted>
//	unchecked <id> <why, quoted>
//
// The tests count the lines and fail on any but "ok". Without the
// variable nothing is done.
const RestorableEnv = "CKPTFS_TEST_RESTORABLE"

// RestoreRules is restorer.Refusals, set by the program that links both
// (cmd/ckptfs, the test binaries); the dumper cannot import the restorer.
var RestoreRules func(*image.Checkpoint) error

var restorableMu sync.Mutex

// checkCommitted is the check above, for checkpoint id just committed to
// repo.
func checkCommitted(repo dedup.Repo, id string) {
	log := os.Getenv(RestorableEnv)
	if log == "" {
		return
	}
	line := "ok " + id
	switch c, err := repo.Load(id); {
	case RestoreRules == nil:
		line = "unchecked " + id + " " + strconv.Quote("this program does not link the restorer's rules (dumper.RestoreRules)")
	case err != nil:
		line = "unchecked " + id + " " + strconv.Quote(fmt.Sprintf("load it back: %v", err))
	default:
		if err := RestoreRules(c); err != nil {
			line = "refused " + id + " " + strconv.Quote(strings.TrimSpace(err.Error()))
		}
	}
	restorableMu.Lock()
	defer restorableMu.Unlock()
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", RestorableEnv, err)
		return
	}
	defer f.Close()
	f.WriteString(line + "\n")
}

// RestorableLog is what a CKPTFS_TEST_RESTORABLE file says: the
// checkpoints checked, and the lines of those that were not "ok".
type RestorableLog struct {
	Checked int
	Bad     []string
	IDs     map[string]bool // the ids of every line
}

// ReadRestorableLog reads a CKPTFS_TEST_RESTORABLE file (none yet: no
// checkpoint).
func ReadRestorableLog(path string) (RestorableLog, error) {
	l := RestorableLog{IDs: map[string]bool{}}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return l, nil
	}
	if err != nil {
		return l, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		l.Checked++
		verdict, rest, _ := strings.Cut(line, " ")
		id, _, _ := strings.Cut(rest, " ")
		l.IDs[id] = true
		if verdict != "ok" {
			l.Bad = append(l.Bad, line)
		}
	}
	return l, nil
}
