package dumper

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// precheckTree applies, before anything is seized, the rules of image that
// look at the whole tree and that restore refuses by (the sessions and
// groups it can recreate, with or without --shell-job; the pty pairs
// whose master the tree holds: image.PtyRefusal), to the tree as /proc
// shows it: pids in walk order (parents first), with the fds collected.
func precheckTree(root int, pids []int, byPid map[int][]*image.FD) error {
	c := &image.Checkpoint{RootPID: root}
	for _, pid := range pids {
		b, err := proc.Read(pid, "stat")
		if err != nil {
			continue // exited meanwhile: the frozen dump decides
		}
		st, err := proc.ParseStat(b)
		if err != nil {
			return fmt.Errorf("process %d: %w", pid, err)
		}
		state := st.State
		if state == "X" {
			state = "Z"
		}
		c.Tasks = append(c.Tasks, &image.Task{PID: pid, PPID: st.PPID, PGID: st.PGID, SID: st.SID,
			TTYNr: st.TTYNr, TPGID: st.TPGID, State: state, FDs: byPid[pid]})
	}
	if c.Task(root) == nil {
		return nil // the root exited: seizing it says so
	}
	pairs := map[int]bool{}
	for _, t := range c.Tasks {
		for _, f := range t.FDs {
			if f.Kind != image.FDPty {
				continue
			}
			n, err := image.PtyMasterIndex(f, false)
			if err != nil {
				return fmt.Errorf("process %d fd %d: %w", t.PID, f.Num, err)
			}
			locked, err := ptyLocked(t.PID, f.Num)
			if err != nil {
				return fmt.Errorf("process %d fd %d: pty /dev/pts/%d: %w", t.PID, f.Num, n, err)
			}
			pairs[n] = pairs[n] || locked
		}
	}
	if err := image.PtyRefusal(c, pairs); err != nil {
		return err
	}
	if err := image.TerminalRefusalAnyFlags(c, pairs); err != nil {
		return err
	}
	return image.SessionRefusalAnyFlags(c)
}

// ptyLocked says whether the pty master at fd n of pid is locked
// (TIOCGPTLCK on a copy of it: nothing of the pair changes).
func ptyLocked(pid, n int) (bool, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false, fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pidfd)
	master, err := unix.PidfdGetfd(pidfd, n, 0)
	if err != nil {
		return false, fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer unix.Close(master)
	locked, err := unix.IoctlGetInt(master, unix.TIOCGPTLCK)
	if err != nil {
		return false, fmt.Errorf("TIOCGPTLCK: %w", err)
	}
	return locked != 0, nil
}
