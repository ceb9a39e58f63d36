package restorer

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/inject"
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
	tfd, err := p.sys(p.pid, unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK)
	if err != nil {
		return -1, nil, nop, err
	}
	closeTask := func() { p.sys(p.pid, unix.SYS_CLOSE, tfd) }
	api := make([]byte, 24)
	le.PutUint64(api, inject.UffdAPI)
	addr, err := p.put(0, api)
	if err != nil {
		closeTask()
		return -1, nil, nop, err
	}
	if _, err := p.sys(p.pid, unix.SYS_IOCTL, tfd, inject.UffdioAPI, addr); err != nil {
		closeTask()
		return -1, nil, nop, fmt.Errorf("UFFDIO_API: %w", err)
	}
	reg := map[*image.VMA]bool{}
	for _, v := range vmas {
		b := make([]byte, 32)
		le.PutUint64(b, v.Start)
		le.PutUint64(b[8:], v.Len())
		le.PutUint64(b[16:], inject.UffdRegisterMiss)
		addr, err := p.put(0, b)
		if err != nil {
			closeTask()
			return -1, nil, nop, err
		}
		if _, err := p.sys(p.pid, unix.SYS_IOCTL, tfd, inject.UffdioRegister, addr); err != nil {
			continue // left to process_vm_writev
		}
		reg[v] = true
	}
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
