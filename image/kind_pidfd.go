package image

import "math"

// FDPidfd is a pidfd (pidfd_open, clone with CLONE_PIDFD).
const FDPidfd = "pidfd"

// Pidfd is the state of a pidfd:
//
//	Pid: 1234       the process it refers to, a task of the tree (its pid
//	                as the tree records it); -1 for a process that had
//	                exited, or one outside the tree
//	outside: 999    (only if so) the pid of the process outside the tree
//	                it referred to when dumped
//
// The kernel's fdinfo prints Pid (-1 once the process is reaped) and
// NSpid, which says nothing more to a restore. A restore opens it again
// for the restored task (pidfd_open once every process exists), and for
// -1 gives a pidfd of a process that has exited, as a pidfd of a process
// outside the tree that could not be followed.
type Pidfd struct {
	Pid     int
	Outside int
}

// Lines renders p as its fdinfo lines.
func (p Pidfd) Lines() []string {
	var w lineWriter
	w.add("Pid", "%d", p.Pid)
	if p.Outside > 0 {
		w.add("outside", "%d", p.Outside)
	}
	return w
}

// ParsePidfd reads the pidfd state of f (or the kernel's fdinfo lines with
// strict false).
func ParsePidfd(f *FD, strict bool) (Pidfd, error) {
	k := fdKindLines(f, []string{"Pid", "outside"}, nil, strict)
	p := Pidfd{Pid: int(k.int("Pid", -1, math.MaxInt32)), Outside: int(k.intOpt("outside", 1, math.MaxInt32))}
	if p.Pid == 0 {
		k.fail("Pid: 0 names no process")
	}
	return p, k.err
}

func pidfdLines(f *FD, strict bool) ([]string, error) {
	p, err := ParsePidfd(f, strict)
	return p.Lines(), err
}
