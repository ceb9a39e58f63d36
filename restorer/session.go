package restorer

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// Sessions, process groups and the terminal.
//
// Sessions and groups are recreated by inheritance: right after its clone3
// a task that led a session calls setsid, one that led a group
// setpgid(0, 0), before its own children are created, so they inherit both.
// Once every task exists, a task that was in a group led by another task
// joins it with setpgid(0, pgid). A session or group whose leader is outside
// the checkpoint (a program started by a shell or a test) becomes the
// restorer's own session or group.
//
// Terminals: without Options.ShellJob a task holding a terminal fd, or
// having a controlling terminal in a session led inside the checkpoint, is
// refused (a task of a session led from outside, one started from a shell
// with its stdio redirected say, joins the restorer's session and so loses
// or changes its controlling terminal). With it, every terminal fd is
// reopened on the restorer's terminal, the root's session is the
// restorer's (the root does not setsid even if it led its session, so the
// restored tasks get the restorer's controlling terminal) and a restored
// group that was the terminal's foreground group becomes it again.

// sessionLeader reports whether task t calls setsid when it is created
// (image.SessionLeader: the rules live in image/rules_session.go, which
// the dumper applies too).
func sessionLeader(c *image.Checkpoint, t *image.Task, shellJob bool) bool {
	return image.SessionLeader(c, t, shellJob)
}

func groupTarget(c *image.Checkpoint, t *image.Task) int { return image.GroupTarget(c, t) }

// checkSessions refuses session and group shapes that creation by
// inheritance cannot give back (image.SessionRefusal).
func checkSessions(c *image.Checkpoint, shellJob bool) error {
	return image.SessionRefusal(c, shellJob)
}

// checkTerminals refuses terminals without --shell-job, and with it checks
// that the restorer has the terminal the tasks need.
func checkTerminals(c *image.Checkpoint, shellJob bool) error {
	root := c.Task(c.RootPID)
	needTerm, needCtty := 0, 0
	for _, t := range c.Tasks {
		if t.State == "Z" {
			continue
		}
		for _, f := range t.FDs {
			if f.Kind != image.FDChar || f.Object != "" {
				continue // a pty of the checkpoint: kind_pty.go
			}
			if ptyMaster(f.Path) {
				return fmt.Errorf("task %d: fd %d is a pty master (%s): cannot restore that yet", t.PID, f.Num, f.Path)
			}
			if !isTTY(f.Path) {
				continue
			}
			if !shellJob {
				return fmt.Errorf("task %d: fd %d is the terminal %s: restore with --shell-job to put it on restore's own terminal", t.PID, f.Num, f.Path)
			}
			needTerm = t.PID
		}
		if t.TTYNr == 0 {
			continue
		}
		if o := ctlPty(c, t); o != nil {
			continue // its leader takes it again: checkPtys (kind_pty.go)
		}
		if !shellJob {
			if c.Task(t.SID) == nil {
				// Its session is led from outside (a program started from
				// an interactive shell with its stdio redirected): it joins
				// the restorer's session, as any task of such a session.
				continue
			}
			return fmt.Errorf("task %d has the controlling terminal %s: restore with --shell-job to put it on restore's own terminal", t.PID, ttyName(t.TTYNr))
		}
		if t.SID != root.SID {
			return fmt.Errorf("task %d has the controlling terminal %s in session %d, not the root's: only the root's session can be put on restore's terminal", t.PID, ttyName(t.TTYNr), t.SID)
		}
		needCtty = t.PID
	}
	if needCtty != 0 {
		if nr := ownTTYNr(); nr == 0 {
			return fmt.Errorf("--shell-job: task %d had a controlling terminal but restore has none to give it", needCtty)
		}
	}
	if needTerm != 0 {
		t, err := openTerminal()
		if err != nil {
			return fmt.Errorf("--shell-job: task %d holds a terminal: %w", needTerm, err)
		}
		t.Close()
	}
	return nil
}

func ptyMaster(path string) bool {
	return path == "/dev/ptmx" || path == "/dev/pts/ptmx"
}

// ttyName names a tty_nr for messages: /dev/pts/N, /dev/ttyN or major:minor.
func ttyName(nr uint64) string {
	major, minor := unix.Major(nr), unix.Minor(nr)
	switch {
	case major >= 136 && major < 144:
		return "/dev/pts/" + strconv.Itoa(int((major-136)*256+minor))
	case major == 4 && minor < 64:
		return "/dev/tty" + strconv.Itoa(int(minor))
	case major == 5 && minor == 1:
		return "/dev/console"
	}
	return fmt.Sprintf("tty %d:%d", major, minor)
}

// ownTTYNr returns the restorer's controlling terminal (0: none).
func ownTTYNr() uint64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	st, err := proc.ParseStat(b)
	if err != nil {
		return 0
	}
	return st.TTYNr
}

// openTerminal opens the restorer's terminal: its controlling terminal by
// its /dev/pts (or /dev/ttyN) name, or /dev/tty, or else the terminal at
// its fd 0, 1 or 2.
func openTerminal() (*os.File, error) {
	const flags = os.O_RDWR | unix.O_NOCTTY | unix.O_CLOEXEC
	if nr := ownTTYNr(); nr != 0 {
		name := ttyName(nr)
		var st unix.Stat_t
		if strings.HasPrefix(name, "/dev/") && unix.Stat(name, &st) == nil && st.Rdev == nr {
			if f, err := os.OpenFile(name, flags, 0); err == nil {
				return f, nil
			}
		}
		if f, err := os.OpenFile("/dev/tty", flags, 0); err == nil {
			return f, nil
		}
	}
	for n := 0; n <= 2; n++ {
		if _, err := unix.IoctlGetTermios(n, unix.TCGETS); err == nil {
			return os.OpenFile("/proc/self/fd/"+strconv.Itoa(n), flags, 0)
		}
	}
	return nil, errors.New("restore has no terminal (no controlling terminal, and none of its fds 0-2 is a terminal)")
}

// attachTerminal opens, once per open file description, the restorer's
// terminal for every terminal fd of the checkpoint with its recorded
// flags, so that installing those fds takes them (files.source).
func (r *restorer) attachTerminal() error {
	if !r.opts.ShellJob {
		return nil
	}
	var term *os.File
	defer func() {
		if term != nil {
			term.Close()
		}
	}()
	for _, t := range r.c.Tasks {
		if t.State == "Z" {
			continue
		}
		for _, f := range t.FDs {
			if f.Kind != image.FDChar || !isTTY(f.Path) || f.Object != "" {
				continue
			}
			key := fdKey(t.PID, f)
			if _, ok := r.files.byKey[key]; ok {
				continue
			}
			if term == nil {
				var err error
				if term, err = openTerminal(); err != nil {
					return fmt.Errorf("--shell-job: %w", err)
				}
			}
			flags := int(f.Flags&reopenMask) | unix.O_NOCTTY | unix.O_CLOEXEC
			fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(int(term.Fd())), flags, 0)
			if err != nil {
				return fmt.Errorf("task %d: fd %d: reopen the terminal %s: %w", t.PID, f.Num, term.Name(), err)
			}
			r.files.byKey[key] = r.files.keep(fd)
		}
	}
	return nil
}

// enterSession runs right after task p's clone3: a session leader calls
// setsid, a group leader setpgid(0, 0), so that its children, created
// next, inherit them. The root's session is the restorer's with --shell-job.
func (p *target) enterSession() error {
	t, c := p.t, p.r.c
	if t.PID == c.RootPID {
		if err := p.r.attachTerminal(); err != nil {
			return err
		}
	}
	switch {
	case sessionLeader(c, t, p.r.opts.ShellJob):
		if _, err := p.sys(p.pid, unix.SYS_SETSID); err != nil {
			return fmt.Errorf("task %d: %w", t.PID, err)
		}
		if err := p.takePtyCtty(); err != nil { // kind_pty.go
			return fmt.Errorf("task %d: %w", t.PID, err)
		}
	case t.PGID == t.PID:
		if _, err := p.sys(p.pid, unix.SYS_SETPGID, 0, 0); err != nil {
			return fmt.Errorf("task %d: %w", t.PID, err)
		}
	}
	return nil
}

// setSessionAndGroup runs once every task exists: a task in a group led
// by another task joins it, one in a group led from outside the
// checkpoint joins the restorer's.
func (p *target) setSessionAndGroup() error {
	want := groupTarget(p.r.c, p.t)
	live := unix.Getpgrp() // the group's id in the restorer's pid namespace
	if want == 0 {
		want = live
	} else if l := p.r.procs[want]; l != nil {
		live, want = l.pid, l.t.InnerPID() // want: as the task sees it
	}
	cur, err := unix.Getpgid(p.pid)
	if err != nil {
		return fmt.Errorf("getpgid: %w", err)
	}
	if cur == live {
		return nil
	}
	if _, err := p.sys(p.pid, unix.SYS_SETPGID, 0, uint64(want)); err != nil {
		return fmt.Errorf("join process group %d: %w", want, err)
	}
	return nil
}

// setGroupAndTerminal joins the task's process group, then gives the pty
// a session leader took back (enterSession) its foreground group
// (kind_pty.go).
func (p *target) setGroupAndTerminal() error {
	if err := p.setSessionAndGroup(); err != nil {
		return err
	}
	return p.setPtyFg()
}

// setForeground makes the restored group that was the foreground group of
// the root's controlling terminal the foreground group of the restorer's
// terminal (--shell-job). It runs before the tasks are released.
func (r *restorer) setForeground() error {
	root := r.c.Task(r.c.RootPID)
	if !r.opts.ShellJob || root == nil || root.TTYNr == 0 || root.TPGID <= 0 {
		return nil
	}
	var g int
	switch l := r.c.Task(root.TPGID); {
	case l != nil && l.State != "Z" && l.PGID == l.PID:
		g = r.procs[root.TPGID].pid // its id in the restorer's namespace
	case root.TPGID == root.PGID:
		// Led from outside: the root's group is the restorer's.
		var err error
		if g, err = unix.Getpgid(r.rootPID); err != nil {
			return err
		}
	default:
		return nil // a group outside the checkpoint was in the foreground
	}
	term, err := openTerminal()
	if err != nil {
		return fmt.Errorf("--shell-job: %w", err)
	}
	defer term.Close()
	// The restorer may itself be in the background: TIOCSPGRP would stop
	// it with SIGTTOU unless that is ignored.
	signal.Ignore(unix.SIGTTOU)
	defer signal.Reset(unix.SIGTTOU)
	if err := unix.IoctlSetPointerInt(int(term.Fd()), unix.TIOCSPGRP, g); err != nil {
		return fmt.Errorf("--shell-job: make group %d the foreground group of %s: %w", g, term.Name(), err)
	}
	return nil
}

// zombieSession puts a task about to become a zombie again in its session
// and group as far as they exist already: a leader calls setsid or
// setpgid(0, 0); a member joins a group led by a task created before it.
func (p *target) zombieSession() error {
	if err := p.enterSession(); err != nil {
		return err
	}
	if g := groupTarget(p.r.c, p.t); g != 0 && g != p.t.PID && p.r.procs[g] != nil {
		return p.setSessionAndGroup()
	}
	return nil
}
