package image

import "fmt"

// The rules of sessions and process groups that a restore can recreate,
// which the restorer applies to a checkpoint (restorer/session.go) and the
// dumper, before it seizes anything, to the tree as /proc shows it
// (dumper/refuse_tree.go). Sessions and groups are recreated by
// inheritance: right after its clone3 a task that led a session calls
// setsid, one that led a group setpgid(0, 0), before its own children are
// made; a session or group led from outside the checkpoint becomes the
// restorer's. shellJob is restore --shell-job: the root's session is the
// restorer's.

// SessionLeader reports whether task t calls setsid when it is created.
func SessionLeader(c *Checkpoint, t *Task, shellJob bool) bool {
	return t.SID == t.PID && !(shellJob && t.PID == c.RootPID)
}

// GroupTarget returns the process group task t must end in: its recorded
// group if a task of the checkpoint leads it, else 0, meaning the
// restorer's own group.
func GroupTarget(c *Checkpoint, t *Task) int {
	if l := c.Task(t.PGID); l != nil && l.State != "Z" && l.PGID == l.PID {
		return t.PGID
	}
	return 0
}

// SessionRefusal refuses session and group shapes that creation by
// inheritance cannot give back. It simulates where every task's session
// and group end (0: the restorer's) and compares with the recorded ones.
func SessionRefusal(c *Checkpoint, shellJob bool) error {
	root := c.Task(c.RootPID)
	if root == nil {
		return fmt.Errorf("root task %d is not in the checkpoint", c.RootPID)
	}
	// want maps a recorded session id to the restored one.
	want := func(t *Task) (int, error) {
		l := c.Task(t.SID)
		switch {
		case shellJob && t.SID == root.SID:
			return 0, nil
		case l == nil:
			return 0, nil // led from outside the checkpoint
		case l.State == "Z":
			return 0, fmt.Errorf("task %d: its session %d was led by a zombie: cannot recreate that session", t.PID, t.SID)
		case l.SID != l.PID:
			return 0, fmt.Errorf("task %d: its session %d is not led by task %d: cannot recreate that session", t.PID, t.SID, l.PID)
		}
		return t.SID, nil
	}
	sid := map[int]int{}
	pgid := map[int]int{}
	for _, t := range c.Tasks {
		s, g := sid[t.PPID], pgid[t.PPID]
		if t.PID == c.RootPID {
			s, g = 0, 0
		}
		if t.State != "Z" {
			if SessionLeader(c, t, shellJob) {
				s, g = t.PID, t.PID
			} else if t.PGID == t.PID {
				g = t.PID
			}
		}
		sid[t.PID], pgid[t.PID] = s, g
		if t.State == "Z" {
			continue // zombies keep the session and group they are created in
		}
		w, err := want(t)
		if err != nil {
			return err
		}
		if s != w {
			return fmt.Errorf("task %d: cannot recreate its session %d: its parent %d is in another session "+
				"(sessions are recreated by inheritance from the parent)", t.PID, t.SID, t.PPID)
		}
		if gt := GroupTarget(c, t); gt == 0 && t.PGID != t.PID {
			if l := c.Task(t.PGID); l != nil {
				return fmt.Errorf("task %d: its process group %d is not led by task %d (a zombie or a task that left it): cannot recreate that group", t.PID, t.PGID, l.PID)
			}
			if w != 0 {
				return fmt.Errorf("task %d: its process group %d is led from outside the checkpoint but its session %d is inside it", t.PID, t.PGID, t.SID)
			}
		}
	}
	return nil
}
