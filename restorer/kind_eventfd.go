package restorer

import (
	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// eventfdKind is an eventfd, made in the task with its count.
type eventfdKind struct{ inTaskKind }

func (eventfdKind) create(p *target, f *image.FD) (uint64, error) {
	e, err := image.ParseEventfd(f, false)
	if err != nil {
		return 0, err
	}
	flags := createFlags(f)
	if e.Semaphore {
		flags |= unix.EFD_SEMAPHORE
	}
	return p.sys(p.pid, unix.SYS_EVENTFD2, e.Count, flags)
}
