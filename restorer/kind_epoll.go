package restorer

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// epollKind is an epoll instance, made in the task after its other fds,
// then given its watches again (postOpen).
type epollKind struct{ inTaskKind }

func (epollKind) late() bool { return true }

func (epollKind) create(p *target, f *image.FD) (uint64, error) {
	return p.sys(p.pid, unix.SYS_EPOLL_CREATE1, uint64(f.Flags&unix.O_CLOEXEC))
}

// postOpen re-adds the recorded watches.
func (epollKind) postOpen(p *target, f *image.FD) error {
	e, err := image.ParseEpoll(f, false)
	if err != nil {
		return err
	}
	for _, w := range e.Watches {
		ev := make([]byte, 12) // struct epoll_event is packed on x86-64
		le.PutUint32(ev, w.Events)
		le.PutUint64(ev[4:], w.Data)
		addr, err := p.put(0, ev)
		if err != nil {
			return err
		}
		if _, err := p.sys(p.pid, unix.SYS_EPOLL_CTL, uint64(f.Num), unix.EPOLL_CTL_ADD, uint64(w.TFD), addr); err != nil {
			return fmt.Errorf("watch fd %d: %w", w.TFD, err)
		}
	}
	return nil
}
