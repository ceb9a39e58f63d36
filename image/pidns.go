package image

import (
	"fmt"
	"strconv"
	"strings"
)

// Pid namespaces. A task dumped in a pid namespace below the dumper's
// (`unshare -pf --mount-proc prog`, a container) has a pid at every level:
// PID is the outermost (the dumper's, and the tree's directory names),
// NSpid lists them all, outermost first, as /proc/<pid>/status does. The
// restorer recreates the innermost level (docs/restore.md, *Pid namespaces*).

// maxPidLevels is the kernel's MAX_PID_NS_LEVEL.
const maxPidLevels = 32

// InnerPID is the pid the task has in its own pid namespace.
func (t *Task) InnerPID() int {
	if len(t.NSpid) > 1 {
		return t.NSpid[len(t.NSpid)-1]
	}
	return t.PID
}

// InnerTID is the id the thread has in its own pid namespace.
func (th *Thread) InnerTID() int {
	if len(th.NSpid) > 1 {
		return th.NSpid[len(th.NSpid)-1]
	}
	return th.TID
}

// PidLevels is how many pid namespace levels the root task has below and
// including the dumper's: 1 for a tree dumped in the dumper's namespace.
func (c *Checkpoint) PidLevels() int {
	if r := c.Task(c.RootPID); r != nil && len(r.NSpid) > 1 {
		return len(r.NSpid)
	}
	return 1
}

// formatNSpid renders ids as /proc status does: space separated.
func formatNSpid(ids []int) string {
	s := make([]string, len(ids))
	for i, v := range ids {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, " ")
}

// parseNSpid parses an NSpid value of the task or thread whose outermost
// id is outer: 2 to 32 ids in range, the first outer.
func parseNSpid(s string, outer int) ([]int, error) {
	f := strings.Fields(s)
	if len(f) < 2 || len(f) > maxPidLevels {
		return nil, fmt.Errorf("NSpid %.40q: want 2 to %d ids", s, maxPidLevels)
	}
	ids := make([]int, len(f))
	for i, v := range f {
		n, err := parseNumber(v, 1, maxPID)
		if err != nil {
			return nil, fmt.Errorf("NSpid %.40q: %w", s, err)
		}
		ids[i] = n
	}
	if ids[0] != outer {
		return nil, fmt.Errorf("NSpid %.40q: first id is not %d", s, outer)
	}
	return ids, nil
}

// checkNSpid checks that a task's threads have as many levels as it has.
func checkNSpid(t *Task) error {
	for _, th := range t.Threads {
		if len(th.NSpid) != len(t.NSpid) && (len(th.NSpid) > 1 || len(t.NSpid) > 1) {
			return fmt.Errorf("task %d: thread %d has %d pid namespace levels, the task %d", t.PID, th.TID, max(1, len(th.NSpid)), max(1, len(t.NSpid)))
		}
	}
	return nil
}

// pstreeNSpid is the `tree` line's note of a task's pids at every level.
func pstreeNSpid(t *Task) string {
	if len(t.NSpid) < 2 {
		return ""
	}
	return " nspid=" + strings.ReplaceAll(formatNSpid(t.NSpid), " ", ",")
}
