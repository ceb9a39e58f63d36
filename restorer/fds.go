package restorer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// restoreFDs closes every fd of the stub, then puts every recorded fd at
// its number: files, pipes, sockets, inotify and inherited fds are the
// restorer's own open files (files.go), pulled in with an injected
// pidfd_getfd; eventfd, timerfd and signalfd are created in the task, epoll
// instances last, once the fds they watch exist (each once per open file
// description: shareCreated).
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
			if (f.Kind == image.FDEpoll) != pass {
				continue
			}
			var err error
			if _, made := p.r.files.byKey[fdKey(p.t.PID, f)]; installedKind(f) || made {
				err = p.installFD(src, f)
			} else if err = p.restoreFD(f); err == nil {
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

// restoreFD creates an eventfd, epoll, signalfd or timerfd in the task.
func (p *target) restoreFD(f *image.FD) error {
	var (
		fd  uint64
		err error
	)
	cloexec := uint64(f.Flags & unix.O_CLOEXEC)
	nonblock := uint64(f.Flags & unix.O_NONBLOCK)
	switch f.Kind {
	case image.FDEventfd:
		count, err := extraHex(f, "eventfd-count")
		if err != nil {
			return err
		}
		flags := cloexec | nonblock
		if v, _ := extraHex(f, "eventfd-semaphore"); v != 0 {
			flags |= unix.EFD_SEMAPHORE
		}
		if fd, err = p.sys(p.pid, unix.SYS_EVENTFD2, count, flags); err != nil {
			return err
		}
	case image.FDEpoll:
		if fd, err = p.sys(p.pid, unix.SYS_EPOLL_CREATE1, cloexec); err != nil {
			return err
		}
	case image.FDSignalfd:
		mask, err := extraHex(f, "sigmask")
		if err != nil {
			return err
		}
		b := make([]byte, 8)
		le.PutUint64(b, mask)
		addr, err := p.put(0, b)
		if err != nil {
			return err
		}
		if fd, err = p.sys(p.pid, unix.SYS_SIGNALFD4, ^uint64(0), addr, 8, cloexec|nonblock); err != nil {
			return err
		}
	case image.FDTimerfd:
		if fd, err = p.timerfd(f, cloexec|nonblock); err != nil {
			return err
		}
	default:
		return fmt.Errorf("cannot restore this kind of fd")
	}
	if int(fd) != f.Num {
		if _, err := p.sys(p.pid, unix.SYS_DUP3, fd, uint64(f.Num), cloexec); err != nil {
			return err
		}
		if _, err := p.sys(p.pid, unix.SYS_CLOSE, fd); err != nil {
			return err
		}
	}
	if f.Kind == image.FDEpoll {
		return p.epollWatches(f)
	}
	return nil
}

// epollWatches re-adds the watches listed by fdinfo's tfd lines.
func (p *target) epollWatches(f *image.FD) error {
	for _, line := range f.Extra {
		fs := strings.Fields(line)
		if len(fs) < 6 || fs[0] != "tfd:" || fs[2] != "events:" || fs[4] != "data:" {
			continue
		}
		tfd, err1 := strconv.Atoi(fs[1])
		events, err2 := strconv.ParseUint(fs[3], 16, 32)
		data, err3 := strconv.ParseUint(fs[5], 16, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return fmt.Errorf("bad epoll watch %q", line)
		}
		ev := make([]byte, 12) // struct epoll_event is packed on x86-64
		le.PutUint32(ev, uint32(events))
		le.PutUint64(ev[4:], data)
		addr, err := p.put(0, ev)
		if err != nil {
			return err
		}
		if _, err := p.sys(p.pid, unix.SYS_EPOLL_CTL, uint64(f.Num), unix.EPOLL_CTL_ADD, uint64(tfd), addr); err != nil {
			return fmt.Errorf("watch fd %d: %w", tfd, err)
		}
	}
	return nil
}

// timerfd recreates a timerfd from its fdinfo (it_value is the time left).
func (p *target) timerfd(f *image.FD, flags uint64) (uint64, error) {
	clock, err := strconv.ParseUint(extra(f, "clockid"), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("fdinfo clockid: %w", err)
	}
	fd, err := p.sys(p.pid, unix.SYS_TIMERFD_CREATE, clock, flags)
	if err != nil {
		return 0, err
	}
	var spec [4]uint64 // it_interval, it_value
	for i, key := range []string{"it_interval", "it_value"} {
		v := extra(f, key)
		v = strings.Trim(v, "() ")
		a, b, ok := strings.Cut(v, ",")
		s, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 64)
		ns, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 64)
		if !ok || err1 != nil || err2 != nil {
			return 0, fmt.Errorf("bad %s %q", key, v)
		}
		spec[2*i], spec[2*i+1] = s, ns
	}
	if spec[2] == 0 && spec[3] == 0 && (spec[0] != 0 || spec[1] != 0) {
		// A periodic timer that expired just as fdinfo was read: it
		// is due again one period later.
		spec[2], spec[3] = spec[0], spec[1]
	}
	if spec[2] != 0 || spec[3] != 0 {
		if err := p.timerfdSettime(fd, spec); err != nil {
			return 0, err
		}
	}
	// The expirations not read yet (settime clears them): the dumper
	// made fdinfo count them all (dumper/fdstate.go).
	if ticks, _ := strconv.ParseUint(extra(f, "ticks"), 10, 64); ticks > 0 {
		b := make([]byte, 8)
		le.PutUint64(b, ticks)
		addr, err := p.put(0, b)
		if err != nil {
			return 0, err
		}
		_, err = p.sys(p.pid, unix.SYS_IOCTL, fd, tfdIocSetTicks, addr)
		if errors.Is(err, unix.ENOTTY) {
			// No CONFIG_CHECKPOINT_RESTORE: the timer fires at once
			// instead, so a read sees at least one expiration.
			spec[2], spec[3] = 0, 1
			err = p.timerfdSettime(fd, spec)
		}
		if err != nil {
			return 0, fmt.Errorf("timerfd: set %d ticks: %w", ticks, err)
		}
	}
	return fd, nil
}

// timerfdSettime arms timerfd fd with spec (it_interval, it_value as
// seconds and nanoseconds), relative to now.
func (p *target) timerfdSettime(fd uint64, spec [4]uint64) error {
	b := make([]byte, 32)
	for i, v := range spec {
		le.PutUint64(b[8*i:], v)
	}
	addr, err := p.put(0, b)
	if err != nil {
		return err
	}
	_, err = p.sys(p.pid, unix.SYS_TIMERFD_SETTIME, fd, 0, addr, 0)
	return err
}

// tfdIocSetTicks is TFD_IOC_SET_TICKS, _IOW('T', 0, __u64): sets a
// timerfd's count of unread expirations (CONFIG_CHECKPOINT_RESTORE).
const tfdIocSetTicks = 1<<30 | 8<<16 | 'T'<<8

// extra returns the value of an fdinfo line "key: value" kept in Extra.
func extra(f *image.FD, key string) string {
	for _, line := range f.Extra {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// extraHex parses an fdinfo value that the kernel prints in hex (eventfd
// count, signal masks).
func extraHex(f *image.FD, key string) (uint64, error) {
	v := extra(f, key)
	if v == "" {
		return 0, fmt.Errorf("fdinfo has no %s", key)
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 64)
	if err != nil {
		return 0, fmt.Errorf("fdinfo %s: %w", key, err)
	}
	return n, nil
}
