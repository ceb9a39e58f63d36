package image

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"
)

// PtyOfTTY returns the index of the pty slave whose device number is nr
// (a task's tty_nr): majors 136-143 are /dev/pts.
func PtyOfTTY(nr uint64) (int, bool) {
	if nr == 0 || unix.Major(nr) < 136 || unix.Major(nr) >= 144 {
		return 0, false
	}
	return int((unix.Major(nr)-136)*256 + unix.Minor(nr)), true
}

// PtyRefusal refuses what no restore could give back of the pty pairs
// whose master the tree holds (pairs: index -> locked), the rules the
// restorer applies to a checkpoint (restorer/kind_pty.go) and the dumper
// to the tree before it seizes anything (dumper/refuse_tree.go) and once
// it is frozen (dumper/kind_pty.go):
//
//   - a live task whose controlling terminal is the slave of such a pair
//     must have its session leader, live, in the tree: the leader takes
//     the pty as controlling terminal again before its children are made;
//   - a locked pair (TIOCSPTLCK) can have no slave fds: the kernel opens
//     no slave of a locked pair.
func PtyRefusal(c *Checkpoint, pairs map[int]bool) error {
	for _, t := range c.Tasks {
		if t.State == "Z" {
			continue
		}
		n, ok := PtyOfTTY(t.TTYNr)
		if _, ours := pairs[n]; ok && ours {
			if l := c.Task(t.SID); l == nil || l.State == "Z" {
				return fmt.Errorf("task %d: its controlling terminal /dev/pts/%d is a pty of the checkpoint but its session %d is led from outside it "+
					"(dump the session leader's tree)", t.PID, n, t.SID)
			}
		}
		for _, f := range t.FDs {
			if f.Kind != FDChar {
				continue
			}
			m := -1
			if idx, ok := cutPts(f.Path); ok {
				m = idx
			} else if f.Object != "" {
				for i := range pairs {
					if f.Object == PtyID(i) {
						m = i
					}
				}
			} else if f.Path == "/dev/tty" && ok {
				m = n
			}
			if locked, ours := pairs[m]; ours && locked {
				return fmt.Errorf("task %d: fd %d: pty /dev/pts/%d is locked (TIOCSPTLCK) while its slave is open: cannot restore that", t.PID, f.Num, m)
			}
		}
	}
	return nil
}

func cutPts(path string) (int, bool) {
	const pts = "/dev/pts/"
	if len(path) <= len(pts) || path[:len(pts)] != pts {
		return 0, false
	}
	n, err := strconv.Atoi(path[len(pts):])
	return n, err == nil && n >= 0
}

// SessionRefusalAnyFlags is SessionRefusal for a dump, which cannot know
// whether the restore will be made with --shell-job: an error only if a
// restore refuses the tree with it and without it (the one with it).
func SessionRefusalAnyFlags(c *Checkpoint) error {
	if SessionRefusal(c, false) == nil {
		return nil
	}
	return SessionRefusal(c, true)
}

// TerminalRefusalAnyFlags refuses what restore refuses with and without
// --shell-job of a controlling terminal that is not a pty of the tree
// (pairs as PtyRefusal's; restorer checkTerminals): a task whose session
// is led inside the tree needs --shell-job to get a terminal, and with it
// only the root's session gets restore's own.
func TerminalRefusalAnyFlags(c *Checkpoint, pairs map[int]bool) error {
	root := c.Task(c.RootPID)
	if root == nil {
		return nil
	}
	for _, t := range c.Tasks {
		if t.State == "Z" || t.TTYNr == 0 {
			continue
		}
		if n, ok := PtyOfTTY(t.TTYNr); ok {
			if _, ours := pairs[n]; ours {
				continue
			}
		}
		if c.Task(t.SID) != nil && t.SID != root.SID {
			return fmt.Errorf("task %d has a controlling terminal (tty_nr %#x) in session %d, led inside the tree but not the root's: "+
				"restore gives a terminal only with --shell-job, and then only to the root's session", t.PID, t.TTYNr, t.SID)
		}
	}
	return nil
}
