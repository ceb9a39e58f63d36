package restorer

import (
	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// signalfdKind is a signalfd, made in the task with its mask (the
// signals it reads are the task's pending signals, restored with it).
type signalfdKind struct{ inTaskKind }

func (signalfdKind) create(p *target, f *image.FD) (uint64, error) {
	s, err := image.ParseSignalfd(f, false)
	if err != nil {
		return 0, err
	}
	b := make([]byte, 8)
	le.PutUint64(b, s.Mask)
	addr, err := p.put(0, b)
	if err != nil {
		return 0, err
	}
	return p.sys(p.pid, unix.SYS_SIGNALFD4, ^uint64(0), addr, 8, createFlags(f))
}
