package dumper

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// Pid namespaces. A tree is dumped with its pids at every level (NSpid of
// /proc/<pid>/status) when it lives in a pid namespace below the
// dumper's, so that restore can give every task its inner pid again. What
// restore cannot rebuild is refused here, before the tree is frozen:
//
//   - a task more than one namespace below the dumper's (nested
//     namespaces: restore creates one level);
//   - a tree whose tasks are not all in the root task's namespace (a
//     shell that ran `unshare -pf prog`: the tree spans two namespaces;
//     dump the namespace's init, prog, instead);
//   - a task that called unshare(CLONE_NEWPID) and has not forked since
//     (its next child would start a namespace restore does not recreate).
//
// A tree inside a child namespace whose init is not dumped (a child of the
// namespace's init) is accepted: restore gives it a new namespace whose
// init is its own.

// nsPIDs parses a status NSpid value: nil for a single level.
func nsPIDs(v string) ([]int, error) {
	f := strings.Fields(v)
	if len(f) < 2 {
		return nil, nil
	}
	ids := make([]int, len(f))
	for i, s := range f {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("NSpid %q: bad id %q", v, s)
		}
		ids[i] = n
	}
	return ids, nil
}

// pidNS is where one task lives, as far as pid namespaces go.
type pidNS struct {
	levels      int    // ids in NSpid: 1 in the dumper's namespace
	ns, forKids string // the ns/pid and ns/pid_for_children links
}

func readPidNS(pid int) (pidNS, error) {
	var n pidNS
	st, err := proc.Read(pid, "status")
	if err != nil {
		return n, err
	}
	n.levels = max(1, len(strings.Fields(proc.KeyValues(st)["NSpid"])))
	if n.ns, err = os.Readlink(proc.Path(pid, "ns/pid")); err != nil {
		return n, err
	}
	if n.forKids, err = os.Readlink(proc.Path(pid, "ns/pid_for_children")); err != nil {
		return n, err
	}
	return n, nil
}

// checkPidNamespaces refuses a tree whose pid namespaces restore cannot
// recreate (see above). pids are the tree's processes, root first; one
// that exited meanwhile (or a zombie whose links are gone) is left to the
// frozen checks.
func checkPidNamespaces(pids []int) error {
	if len(pids) == 0 {
		return nil
	}
	root, err := readPidNS(pids[0])
	if err != nil {
		return nil // gone: seizing it fails with the reason
	}
	ns := map[int]pidNS{}
	for _, pid := range pids {
		n, err := readPidNS(pid)
		if err != nil {
			continue
		}
		ns[pid] = n
		switch {
		case n.levels > 2:
			return fmt.Errorf("dump %d: task %d is %d pid namespaces below this one: nested pid namespaces are not restored (only one level)", pids[0], pid, n.levels-1)
		case n.ns != root.ns:
			return fmt.Errorf("dump %d: task %d is in pid namespace %s, the root task in %s: a tree that spans pid namespaces cannot be restored (dump the namespace's init instead)", pids[0], pid, n.ns, root.ns)
		}
	}
	for _, pid := range pids {
		if n, ok := ns[pid]; ok && n.forKids != n.ns {
			return fmt.Errorf("dump %d: task %d called unshare(CLONE_NEWPID): its next child would start pid namespace %s, which restore does not recreate", pids[0], pid, n.forKids)
		}
	}
	return nil
}

// checkCollectedLevels checks, once the frozen tree is collected, that
// every task has as many pid levels as the root: a task that entered
// another namespace between the precheck and the freeze is refused.
func checkCollectedLevels(c *image.Checkpoint) error {
	want := c.PidLevels()
	var errs []error
	for _, t := range c.Tasks {
		if got := max(1, len(t.NSpid)); got != want {
			errs = append(errs, fmt.Errorf("dump %d: task %d has %d pid namespace levels, the root %d: a tree that spans pid namespaces cannot be restored", c.RootPID, t.PID, got, want))
		}
	}
	return errors.Join(errs...)
}
