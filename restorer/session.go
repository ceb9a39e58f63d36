package restorer

import "golang.org/x/sys/unix"

// Sessions, process groups and the terminal.

// setSessionAndGroup makes the task a session or process group leader
// again if it was one.
func (p *target) setSessionAndGroup() error {
	t := p.t
	switch {
	case t.SID == t.PID:
		if _, err := p.sys(p.pid, unix.SYS_SETSID); err != nil {
			return err
		}
	case t.PGID == t.PID:
		if _, err := p.sys(p.pid, unix.SYS_SETPGID, 0, 0); err != nil {
			return err
		}
	}
	return nil
}
