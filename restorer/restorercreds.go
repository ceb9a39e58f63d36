package restorer

import (
	"fmt"
	"os"
	"slices"
	"strconv"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// A user other than root may restore only what it could have made itself:
// every task of the tree must have that user's uids and gids (real,
// effective, saved and fs each one of the restorer's real, effective or
// saved ids, which is what an unprivileged setresuid may set), groups among
// the restorer's, and no capability the restorer does not have. Anything
// else is refused before a process is created, naming the task and the
// field. (Root may restore any tree: it could create any process anyway;
// the files of the tree are still opened with each task's credentials.)

// restorerCreds are the credentials of the restoring process.
type restorerCreds struct {
	UID, GID [3]int // real, effective, saved
	Groups   []int
	CapPrm   uint64 // the capabilities it may use (permitted)
}

// capSet is one recorded capability set of a task ("CapEff", "CapPrm",
// "CapInh", "CapAmb"), as in /proc/<pid>/status.
type capSet struct {
	Name string
	Bits uint64
}

// taskCapSets returns the capability sets recorded for t (restorer/security.go
// restores them): the main thread's first, then those of threads whose
// privileges differ. The check below compares each with the restorer's
// permitted set. The bounding set limits, it grants nothing, so it is not
// returned. A variable so that tests can stand in for a tree.
var taskCapSets = recordedCapSets

func recordedCapSets(t *image.Task) []capSet {
	var out []capSet
	add := func(s *image.Security) {
		if s != nil {
			out = append(out, capSet{"CapEff", s.CapEff}, capSet{"CapPrm", s.CapPrm},
				capSet{"CapInh", s.CapInh}, capSet{"CapAmb", s.CapAmb})
		}
	}
	add(t.Security)
	for _, th := range t.Threads {
		add(th.Security)
	}
	return out
}

// ownCreds reads the restorer's credentials from /proc/self/status.
func ownCreds() (restorerCreds, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return restorerCreds{}, err
	}
	st := proc.KeyValues(b)
	var me restorerCreds
	uid, gid := proc.IDs(st["Uid"]), proc.IDs(st["Gid"])
	if len(uid) < 3 || len(gid) < 3 {
		return me, fmt.Errorf("/proc/self/status: Uid %q Gid %q", st["Uid"], st["Gid"])
	}
	copy(me.UID[:], uid)
	copy(me.GID[:], gid)
	me.Groups = proc.IDs(st["Groups"])
	if me.CapPrm, err = strconv.ParseUint(st["CapPrm"], 16, 64); err != nil {
		return me, fmt.Errorf("/proc/self/status CapPrm: %w", err)
	}
	return me, nil
}

var idNames = [4]string{"real", "effective", "saved", "fs"}

// checkRestorer refuses a tree that a non-root restorer me may not
// restore.
func checkRestorer(c *image.Checkpoint, me restorerCreds) error {
	if me.UID[1] == 0 {
		return nil
	}
	for _, t := range c.Tasks {
		for i, id := range t.Creds.UID {
			if !slices.Contains(me.UID[:], id) {
				return fmt.Errorf("task %d: Uid (%s) is %d, but a restore by uid %d may only give a task its own uids %v: restore it as root", t.PID, idNames[i], id, me.UID[1], me.UID)
			}
		}
		for i, id := range t.Creds.GID {
			if !slices.Contains(me.GID[:], id) {
				return fmt.Errorf("task %d: Gid (%s) is %d, but a restore by uid %d may only give a task its own gids %v: restore it as root", t.PID, idNames[i], id, me.UID[1], me.GID)
			}
		}
		for _, g := range t.Creds.Groups {
			if !slices.Contains(me.Groups, g) {
				return fmt.Errorf("task %d: Groups has %d, which is not a group of the restoring uid %d (%v): restore it as root", t.PID, g, me.UID[1], me.Groups)
			}
		}
		for _, cs := range taskCapSets(t) {
			if extra := cs.Bits &^ me.CapPrm; extra != 0 {
				return fmt.Errorf("task %d: %s has capabilities %#x that the restoring uid %d does not have (CapPrm %#x): restore it as root", t.PID, cs.Name, extra, me.UID[1], me.CapPrm)
			}
		}
	}
	return nil
}
