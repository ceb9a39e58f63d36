package restorer

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// restoreFDs closes every fd of the stub, then puts every recorded fd at
// its number: files, pipes, sockets, inotify and inherited fds are the
// restorer's own open files (their kind's open, files.go), pulled in with
// an injected pidfd_getfd; kinds made in the task (eventfd, timerfd,
// signalfd, epoll) are created there, late kinds (epoll) last, once the
// fds they watch exist (each once per open file description:
// shareCreated).
func (p *target) restoreFDs() error {
	have, err := proc.FDs(p.pid)
	if err != nil {
		return err
	}
	for _, n := range have {
		if p.keepsFD(n) { // pidns.go
			continue
		}
		if _, err := p.sys(p.pid, unix.SYS_CLOSE, uint64(n)); err != nil {
			return fmt.Errorf("close stub fd %d: %w", n, err)
		}
	}
	if len(p.t.FDs) == 0 {
		return nil
	}
	// Room above the highest recorded fd for the restorer's pidfd (the
	// recorded limits are set after).
	var lim unix.Rlimit
	if err := unix.Prlimit(p.pid, unix.RLIMIT_NOFILE, nil, &lim); err != nil {
		return err
	}
	lim.Cur = lim.Max
	if err := unix.Prlimit(p.pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		return err
	}
	top := p.t.FDs[len(p.t.FDs)-1].Num
	pidfd, err := p.restorerPidfd() // pidns.go
	if err != nil {
		return err
	}
	src, err := p.sys(p.pid, unix.SYS_FCNTL, pidfd, unix.F_DUPFD_CLOEXEC, uint64(top+1))
	p.sys(p.pid, unix.SYS_CLOSE, pidfd)
	if err != nil {
		return err
	}
	defer p.sys(p.pid, unix.SYS_CLOSE, src)
	for _, pass := range []bool{false, true} {
		for _, f := range p.t.FDs {
			k, err := kindOf(p.r.c, f)
			if err != nil {
				if !inheritFD(p.r.c, p.t.PID, f, p.r.files.own) {
					return fmt.Errorf("fd %d (%s %s): %w", f.Num, f.Kind, f.Path, err)
				}
				k = kindBase{} // taken over from the restorer, whatever it is
			}
			if k.late() != pass {
				continue
			}
			if _, made := p.r.files.byKey[fdKey(p.t.PID, f)]; !k.inTask() || made {
				err = p.installFD(src, f)
			} else if err = p.restoreFD(k, f); err == nil {
				err = p.shareCreated(f)
			}
			if err != nil {
				return fmt.Errorf("fd %d (%s %s): %w", f.Num, f.Kind, f.Path, err)
			}
		}
	}
	return nil
}

// installFD puts the restorer's file for f at f.Num with pidfd_getfd
// through src, a pidfd of the restorer in the task.
func (p *target) installFD(src uint64, f *image.FD) error {
	own, err := p.r.files.source(p.r.c, p.t, f)
	if err != nil {
		return err
	}
	fd, err := p.sys(p.pid, unix.SYS_PIDFD_GETFD, src, uint64(own), 0)
	if err != nil {
		return err
	}
	// pidfd_getfd sets close-on-exec.
	if int(fd) == f.Num {
		if !f.Cloexec() {
			_, err = p.sys(p.pid, unix.SYS_FCNTL, fd, unix.F_SETFD, 0)
		}
		return err
	}
	if _, err := p.sys(p.pid, unix.SYS_DUP3, fd, uint64(f.Num), uint64(f.Flags&unix.O_CLOEXEC)); err != nil {
		return err
	}
	_, err = p.sys(p.pid, unix.SYS_CLOSE, fd)
	return err
}

// shareCreated keeps a restorer copy of fd f just created in the task when
// other fds (of this or another task) are the same open file description:
// they are installed from the copy (installFD) instead of being created
// again, so a forked eventfd, timerfd, signalfd or epoll is one again.
func (p *target) shareCreated(f *image.FD) error {
	if f.OFD == "" {
		return nil
	}
	pidfd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", p.pid, err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, f.Num, 0)
	if err != nil {
		return fmt.Errorf("pidfd_getfd: %w", err)
	}
	p.r.files.byKey[f.OFD] = p.r.files.keep(fd)
	return nil
}

// restoreFD creates f in the task (its kind's create), puts it at its
// number and finishes it (its kind's postOpen).
func (p *target) restoreFD(k kind, f *image.FD) error {
	fd, err := k.create(p, f)
	if err != nil {
		return err
	}
	if int(fd) != f.Num {
		if _, err := p.sys(p.pid, unix.SYS_DUP3, fd, uint64(f.Num), uint64(f.Flags&unix.O_CLOEXEC)); err != nil {
			return err
		}
		if _, err := p.sys(p.pid, unix.SYS_CLOSE, fd); err != nil {
			return err
		}
	}
	return k.postOpen(p, f)
}

// createFlags are the O_CLOEXEC and O_NONBLOCK bits of f, which the
// EFD_, SFD_ and TFD_ flags of the same names share.
func createFlags(f *image.FD) uint64 {
	return uint64(f.Flags & (unix.O_CLOEXEC | unix.O_NONBLOCK))
}
