package restorer

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/sysseq"
)

// uffdFill sets up UFFDIO_COPY for the anonymous vmas of the task that
// have saved pages: a userfaultfd created in the task (injected), those
// vmas registered for missing pages, and the fd pulled into the restorer
// with pidfd_getfd. UFFDIO_COPY allocates and fills each page in one step,
// where process_vm_writev first faults in a zeroed page and then copies.
// It returns the restorer's fd (-1 when nothing is registered) and a
// cleanup that closes both fds, which unregisters the vmas.
func (p *target) uffdFill(ranges map[*image.VMA][][2]int64) (int, map[*image.VMA]bool, func(), error) {
	var vmas []*image.VMA
	for _, v := range p.t.VMAs {
		if len(ranges[v]) > 0 && !v.Shared() && !mapsFile(v) {
			vmas = append(vmas, v)
		}
	}
	nop := func() {}
	if len(vmas) == 0 {
		return -1, nil, nop, nil
	}
	uffd := p.q(nil, unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK)
	api := make([]byte, 24)
	le.PutUint64(api, inject.UffdAPI)
	addrs, err := p.putSeq(api)
	if err != nil {
		return -1, nil, nop, err
	}
	p.qFrom(wrapf("UFFDIO_API"), uffd, 0, unix.SYS_IOCTL, 0, inject.UffdioAPI, addrs[0])
	reg := map[*image.VMA]bool{}
	for _, v := range vmas {
		b := make([]byte, 32)
		le.PutUint64(b, v.Start)
		le.PutUint64(b[8:], v.Len())
		le.PutUint64(b[16:], inject.UffdRegisterMiss)
		addrs, err := p.putSeq(b)
		if err != nil {
			return -1, nil, nop, err
		}
		p.queue(sysseq.Call{Nr: unix.SYS_IOCTL, Args: [6]uint64{0, inject.UffdioRegister, addrs[0]}, From: uffd, Arg: 0, GoOn: true,
			Check: func(_ uint64, err error) error {
				reg[v] = err == nil // else left to process_vm_writev
				return nil
			}}, nil)
	}
	// The one stop before the memory is written: every call queued so
	// far runs here.
	tfd, err := p.value(uffd)
	if err != nil {
		return -1, nil, nop, err
	}
	closeTask := func() { p.q(nil, unix.SYS_CLOSE, tfd) }
	pidfd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		closeTask()
		return -1, nil, nop, err
	}
	ufd, err := unix.PidfdGetfd(pidfd, int(tfd), 0)
	unix.Close(pidfd)
	if err != nil {
		closeTask()
		return -1, nil, nop, fmt.Errorf("pidfd_getfd userfaultfd: %w", err)
	}
	return ufd, reg, func() { unix.Close(ufd); closeTask() }, nil
}
