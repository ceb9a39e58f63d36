package restorer

import (
	"fmt"
	"os/exec"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// pidfdKind is a pidfd: opened again (pidfd_open, in the restorer, once
// every process of the tree exists) for the restored task it named; one
// of a process that had exited, or was outside the tree, is a pidfd of a
// process of the restorer's that has exited (made before the tree is:
// prepareExitedPidfd).
type pidfdKind struct{ kindBase }

// check: a pidfd naming a live pid must name a task of the tree (the dump
// recorded any other as exited).
func (pidfdKind) check(c *image.Checkpoint, t *image.Task, f *image.FD) error {
	p, err := image.ParsePidfd(f, false)
	if err != nil {
		return err
	}
	if p.Pid > 0 && c.Task(p.Pid) == nil {
		return fmt.Errorf("a pidfd of pid %d, which is not a task of the checkpoint (the tree was edited?)", p.Pid)
	}
	return nil
}

func (pidfdKind) checksTreeOnly() {} // refusals.go

func (pidfdKind) open(fs *files, c *image.Checkpoint, _ *image.Task, f *image.FD) (int, error) {
	p, err := image.ParsePidfd(f, false)
	if err != nil {
		return -1, err
	}
	nonblock := f.Flags&unix.O_NONBLOCK != 0
	if p.Pid < 0 {
		fd, ok := fs.exitedPidfds[nonblock]
		if !ok {
			return -1, fmt.Errorf("no pidfd of an exited process was made")
		}
		return fd, nil
	}
	pid, ok := fs.restoredPid(p.Pid)
	if !ok {
		return -1, fmt.Errorf("pidfd of pid %d: not restored", p.Pid)
	}
	fd, err := unix.PidfdOpen(pid, int(f.Flags&unix.O_NONBLOCK))
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	return fs.keep(fd), nil
}

// prepareExitedPidfd makes, if the tree has a pidfd of an exited process,
// a pidfd of a child of the restorer's that has exited and been reaped,
// before any process of the tree exists.
func (fs *files) prepareExitedPidfd(c *image.Checkpoint) error {
	need := map[bool]bool{} // by O_NONBLOCK
	for _, t := range c.Tasks {
		for _, f := range t.FDs {
			if f.Kind == image.FDPidfd {
				if p, err := image.ParsePidfd(f, false); err == nil && p.Pid < 0 {
					need[f.Flags&unix.O_NONBLOCK != 0] = true
				}
			}
		}
	}
	for nonblock := range need {
		fd, err := exitedPidfd()
		if err != nil {
			return fmt.Errorf("a pidfd of an exited process: %w", err)
		}
		fs.keep(fd)
		if nonblock {
			if err := setStatusFlags(fd, unix.O_NONBLOCK); err != nil {
				return err
			}
		}
		fs.exitedPidfds[nonblock] = fd
	}
	return nil
}

// exitedPidfd runs true(1) and returns its pidfd once it has exited and
// been reaped.
func exitedPidfd() (int, error) {
	truePath, err := exec.LookPath("true")
	if err != nil {
		return -1, err
	}
	pidfd := -1
	cmd := exec.Command(truePath)
	cmd.SysProcAttr = &unix.SysProcAttr{PidFD: &pidfd}
	if err := cmd.Run(); err != nil {
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		return -1, err
	}
	if pidfd < 0 {
		return -1, fmt.Errorf("the kernel gave no pidfd")
	}
	return pidfd, nil
}
