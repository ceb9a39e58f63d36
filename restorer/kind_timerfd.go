package restorer

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// timerfdKind is a timerfd, made in the task, armed with the time left
// and its period, with its count of unread expirations.
type timerfdKind struct{ inTaskKind }

// create recreates a timerfd (it_value is the time left, relative).
func (timerfdKind) create(p *target, f *image.FD) (uint64, error) {
	tm, err := image.ParseTimerfd(f, false)
	if err != nil {
		return 0, err
	}
	fd, err := p.sys(p.pid, unix.SYS_TIMERFD_CREATE, uint64(tm.Clock), createFlags(f))
	if err != nil {
		return 0, err
	}
	spec := [4]uint64{tm.Interval.Sec, tm.Interval.Nsec, tm.Value.Sec, tm.Value.Nsec}
	if tm.Value.Zero() && !tm.Interval.Zero() {
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
	// counted them all (dumper/kind_timerfd.go).
	if ticks := tm.Ticks; ticks > 0 {
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
