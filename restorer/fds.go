package restorer

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/sysseq"
)

// restoreFDs closes every fd of the stub, then puts every recorded fd at
// its number: files, pipes, sockets, inotify and inherited fds are the
// restorer's own open files (their kind's open, files.go), pulled in with
// an injected pidfd_getfd; kinds made in the task (eventfd, timerfd,
// signalfd, epoll) are created there, late kinds (epoll) last, once the
// fds they watch exist (each once per open file description:
// shareCreated).
//
// Its calls are queued (queue.go): the files from the restorer need no
// stop at all, an fd made in the task one or two.
func (p *target) restoreFDs() error {
	have, err := proc.FDs(p.pid)
	if err != nil {
		return err
	}
	open := map[int]bool{} // the task's fd table, as the queued calls leave it
	for _, n := range have {
		if p.keepsFD(n) { // pidns.go
			open[n] = true
			continue
		}
		p.q(wrapf("close stub fd %d", n), unix.SYS_CLOSE, uint64(n))
	}
	if len(p.t.FDs) == 0 {
		return nil
	}
	// Room above the highest recorded fd for the restorer's pidfd (the
	// recorded limits are set after). Only raised: the calls queued
	// before need no order with it.
	var lim unix.Rlimit
	if err := unix.Prlimit(p.pid, unix.RLIMIT_NOFILE, nil, &lim); err != nil {
		return err
	}
	lim.Cur = lim.Max
	if err := unix.Prlimit(p.pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		return err
	}
	top := p.t.FDs[len(p.t.FDs)-1].Num
	pidfd := p.queueRestorerPidfd() // pidns.go
	src := p.qFrom(nil, pidfd, 0, unix.SYS_FCNTL, 0, unix.F_DUPFD_CLOEXEC, uint64(top+1))
	p.queue(sysseq.Call{Nr: unix.SYS_CLOSE, From: pidfd, GoOn: true}, nil)
	defer p.queue(sysseq.Call{Nr: unix.SYS_CLOSE, From: src, GoOn: true}, nil)
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
				err = p.installFD(src, f, open)
			} else if err = p.restoreFD(k, f); err == nil {
				err = p.shareCreated(f)
				if err == nil {
					open, err = p.openFDs() // whatever the kind left open
				}
			}
			if err != nil {
				return fmt.Errorf("fd %d (%s %s): %w", f.Num, f.Kind, f.Path, err)
			}
		}
	}
	return nil
}

// openFDs returns the task's open fds, once the queued calls ran.
func (p *target) openFDs() (map[int]bool, error) {
	if err := p.flush(); err != nil {
		return nil, err
	}
	have, err := proc.FDs(p.pid)
	if err != nil {
		return nil, err
	}
	open := map[int]bool{}
	for _, n := range have {
		open[n] = true
	}
	return open, nil
}

// installFD queues the calls that put the restorer's file for f at f.Num
// with pidfd_getfd through src, a pidfd of the restorer in the task.
// open is the task's fd table when they run (updated): pidfd_getfd gives
// its lowest free number, and that is f.Num or a number dup3 moves from.
func (p *target) installFD(src sysseq.Ret, f *image.FD, open map[int]bool) error {
	own, err := p.r.files.source(p.r.c, p.t, f)
	if err != nil {
		return err
	}
	what := wrapf("fd %d (%s %s)", f.Num, f.Kind, f.Path)
	at := 0
	for open[at] {
		at++
	}
	open[f.Num] = true
	getfd := sysseq.Call{Nr: unix.SYS_PIDFD_GETFD, Args: [6]uint64{0, uint64(own), 0}, From: src, Arg: 0}
	getfd.Check = func(got uint64, err error) error {
		switch {
		case err != nil:
			return what(fmt.Errorf("pidfd_getfd: %w", err))
		case (at == f.Num) != (got == uint64(f.Num)):
			return what(fmt.Errorf("pidfd_getfd gave fd %d, where fd %d was expected", got, at))
		}
		return nil
	}
	fd := p.queue(getfd, nil)
	// pidfd_getfd sets close-on-exec.
	if at == f.Num {
		if !f.Cloexec() {
			p.q(what, unix.SYS_FCNTL, uint64(f.Num), unix.F_SETFD, 0)
		}
		return nil
	}
	p.qFrom(what, fd, 0, unix.SYS_DUP3, 0, uint64(f.Num), uint64(f.Flags&unix.O_CLOEXEC))
	p.qFrom(what, fd, 0, unix.SYS_CLOSE)
	return nil
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
