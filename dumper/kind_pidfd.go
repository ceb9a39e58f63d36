package dumper

import (
	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// pidfdKind is a pidfd: the process it refers to, from fdinfo's Pid,
// which its schema reads (fdKindState). One referring to a process
// outside the tree is recorded as of an exited process (collect).
type pidfdKind struct{ noOps }

func (pidfdKind) fdKind() string { return image.FDPidfd }
func (pidfdKind) classifies(link string, _ uint32) bool {
	return link == "anon_inode:[pidfd]" || len(link) > 7 && link[:7] == "pidfd:["
}
func (pidfdKind) owns(*image.FD) bool { return true }

// refuse: a pidfd of one thread (PIDFD_THREAD, which is O_EXCL) is not
// restored: the thread it refers to is created after the fds are.
func (pidfdKind) refuse(pid int, f *image.FD) error {
	if f.Flags&unix.O_EXCL != 0 {
		return &ErrUnsupported{PID: pid, FD: f.Num, Kind: "a pidfd of a single thread (PIDFD_THREAD), which restore cannot make: close it before the dump or let the program use a process pidfd", What: f.Path}
	}
	return nil
}

// collect records a pidfd of a process outside the tree as one of a
// process that has exited (Pid -1), keeping the pid it named (outside):
// the tree comes back without that process.
func (pidfdKind) collect(cc *collection, _ *image.Task, f *image.FD) error {
	p, err := image.ParsePidfd(f, false)
	if err != nil || p.Pid <= 0 {
		return err
	}
	for _, t := range cc.c.Tasks {
		if t.PID == p.Pid {
			return nil
		}
	}
	f.Extra = append(commonLines(f), image.Pidfd{Pid: -1, Outside: p.Pid}.Lines()...)
	return nil
}
