package restorer

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/ptrace"
	"github.com/ckptfs/ckptfs/internal/stub"
	"github.com/ckptfs/ckptfs/internal/sysseq"
)

// Pid namespaces (docs/restore.md, *Pid namespaces*).
//
// With Options.PidNS, or for a tree dumped inside a pid namespace, the
// tree is restored into a new pid namespace where every task gets the pid
// it has in its own namespace (image.Task.InnerPID): the stub clones a
// copy of itself with CLONE_NEWPID|CLONE_NEWNS and set_tid = {1}; that copy
// makes the mount tree a slave of the restorer's, mounts a /proc of the
// new namespace and detaches its copies of ckptfs mounts (pidns_proc.go),
// then clones the root with set_tid = {its inner pid}, and
// every task clones its children as before. Pid 1 is the tree's root when
// its inner pid is 1; else the copy stays pid 1 and, once the tree runs,
// is pointed at the stub's init code (stub.InitEntry): it reaps orphans,
// forwards SIGHUP, SIGINT and SIGTERM to the root and exits with the root's
// exit code (128+n for a death by signal n) (pidns_init.go).
//
// The restorer is not visible inside the namespace, so a task cannot
// pidfd_open it: the stub is started with a pidfd of the restorer at fd 3,
// the namespace's first task moves it to a number above every recorded fd
// (pidNamespace.reserved) before any other task is cloned, so every task inherits it,
// and injected calls that need the restorer's pidfd duplicate that one
// (restorerPidfd). It is closed when the task is released.

// pidNamespace is the namespace a restore creates.
type pidNamespace struct {
	first    *target // pid 1: the init, or the root if its inner pid is 1
	isInit   bool    // first is our init (not a task of the tree)
	reserved int     // the fd at which every task holds the restorer's pidfd
	pidfd    *os.File
}

// wantPidNS says whether the tree is restored into a new pid namespace.
func wantPidNS(c *image.Checkpoint, opts Options) bool {
	return opts.PidNS || c.PidLevels() > 1
}

// checkPidNS refuses pid namespace shapes restore cannot rebuild (the dump
// refuses them too: a tree edited or from another dumper): more than one
// level below the dumper's, tasks of different depths, inner pids that
// collide, an inner pid 1 that is not the root.
func checkPidNS(c *image.Checkpoint) error {
	levels := c.PidLevels()
	if levels > 2 {
		return fmt.Errorf("task %d is %d pid namespaces deep: only one level is restored", c.RootPID, levels-1)
	}
	seen := map[int]int{}
	for _, t := range c.Tasks {
		if got := max(1, len(t.NSpid)); got != levels {
			return fmt.Errorf("task %d has %d pid namespace levels, the root %d: a tree that spans pid namespaces cannot be restored", t.PID, got, levels)
		}
		ids := []int{t.InnerPID()}
		for _, th := range t.Threads[min(1, len(t.Threads)):] {
			ids = append(ids, th.InnerTID())
		}
		for _, id := range ids {
			if other, ok := seen[id]; ok {
				return fmt.Errorf("tasks %d and %d both have pid %d in their namespace", other, t.PID, id)
			}
			seen[id] = t.PID
		}
		if t.InnerPID() == 1 && t.PID != c.RootPID {
			return fmt.Errorf("task %d has pid 1 in its namespace but is not the root", t.PID)
		}
	}
	return nil
}

// newPidNamespace prepares a restore into a new namespace: the restorer's
// pidfd for the stub and the number every task will hold it at.
func newPidNamespace(c *image.Checkpoint) (*pidNamespace, error) {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open of the restorer: %w", err)
	}
	unix.CloseOnExec(fd)
	top := 4 // the stub's own fds: 0-2, this pidfd, its memfd
	for _, t := range c.Tasks {
		for _, f := range t.FDs {
			top = max(top, f.Num)
		}
	}
	return &pidNamespace{reserved: top + 1, pidfd: os.NewFile(uintptr(fd), "restorer-pidfd")}, nil
}

// stubFiles are the stub's extra fds: the restorer's pidfd at fd 3 for a
// restore into a new namespace.
func (r *restorer) stubFiles() []*os.File {
	if r.ns == nil {
		return nil
	}
	return []*os.File{r.ns.pidfd}
}

func (ns *pidNamespace) close() {
	if ns != nil && ns.pidfd != nil {
		ns.pidfd.Close()
		ns.pidfd = nil
	}
}

// spawnRootInNS creates the namespace and the root task in it: the stub's
// copy at pid 1 is the root itself when the root's inner pid is 1, else the
// namespace's init, which clones the root. It returns the root's pid (in
// the restorer's namespace) and the target it was cloned from.
func (r *restorer) spawnRootInNS(t *image.Task) (int, *target, error) {
	regs, err := ptrace.GetRegs(r.stub.Process.Pid)
	if err != nil {
		return 0, nil, err
	}
	st := &target{pid: r.stub.Process.Pid, tramp: stub.Trampoline, scratch: (regs.Rsp - 4096) &^ 0xfff}
	first, err := st.cloneNewNS()
	if err != nil {
		return 0, nil, fmt.Errorf("create pid namespace: %w", err)
	}
	p := &target{r: r, pid: first, tramp: st.tramp, scratch: st.scratch, tids: []int{first}, inNS: true}
	r.ns.first = p
	if err := p.setupNamespace(); err != nil {
		return 0, nil, fmt.Errorf("pid namespace: %w", err)
	}
	if t.InnerPID() == 1 {
		r.logf("pid namespace: the root is its pid 1, pid %d outside", first)
		return first, st, nil
	}
	r.ns.isInit = true
	pid, err := p.clone3(p.pid, 0, uint64(unix.SIGCHLD), t.InnerPID())
	if err != nil {
		return 0, nil, fmt.Errorf("create task %d: %w", t.PID, err)
	}
	r.logf("pid namespace: init is pid %d outside, the root %d", first, pid)
	return pid, p, nil
}

// cloneNewNS clones the stub into a new pid and mount namespace as its
// pid 1 and waits for the copy's first stop. The copy is the restorer's
// child (CLONE_PARENT), like a root restored without a namespace.
func (p *target) cloneNewNS() (int, error) {
	args := make([]byte, 96)
	le.PutUint64(args[0:], unix.CLONE_PARENT|unix.CLONE_NEWPID|unix.CLONE_NEWNS)
	le.PutUint64(args[64:], p.scratch+88) // set_tid
	le.PutUint64(args[72:], 1)            // set_tid_size: the new namespace only
	le.PutUint32(args[88:], 1)
	if err := inject.WriteMem(p.pid, p.scratch, args); err != nil {
		return 0, err
	}
	got, err := p.sysTrap(p.pid, unix.SYS_CLONE3, p.scratch, 88)
	if err != nil {
		return 0, err
	}
	pid := int(got)
	ws, err := ptrace.Wait(pid)
	if err != nil {
		return 0, err
	}
	if !ws.Stopped() {
		return 0, fmt.Errorf("new task %d: unexpected status %#x", pid, uint32(ws))
	}
	return pid, nil
}

// setupNamespace runs in the namespace's pid 1 before any other task is
// cloned: the mount tree becomes a slave of the restorer's (so nothing
// mounted inside shows outside, everything mounted outside still shows
// inside), /proc is the new namespace's, and the restorer's pidfd (fd 3,
// from the stub) moves to the reserved number every task inherits.
func (p *target) setupNamespace() error {
	root, err := p.cstr(256, "/")
	if err != nil {
		return err
	}
	if _, err := p.sys(p.pid, unix.SYS_MOUNT, 0, root, 0, unix.MS_REC|unix.MS_SLAVE, 0); err != nil {
		return fmt.Errorf("make the mount tree a slave: %w", err)
	}
	procName, err := p.cstr(512, "proc")
	if err != nil {
		return err
	}
	procDir, err := p.cstr(768, "/proc")
	if err != nil {
		return err
	}
	if _, err := p.sys(p.pid, unix.SYS_MOUNT, procName, procDir, procName, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, 0); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	if err := p.detachCheckpointMounts(); err != nil {
		return err
	}
	res := p.r.ns.reserved
	var lim unix.Rlimit
	if err := unix.Prlimit(p.pid, unix.RLIMIT_NOFILE, nil, &lim); err != nil {
		return err
	}
	if lim.Max <= uint64(res) {
		return fmt.Errorf("fd %d: above the hard limit on open files (%d)", res, lim.Max)
	}
	lim.Cur = lim.Max
	if err := unix.Prlimit(p.pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		return err
	}
	got, err := p.sys(p.pid, unix.SYS_FCNTL, 3, unix.F_DUPFD_CLOEXEC, uint64(res))
	if err != nil {
		return fmt.Errorf("keep the restorer's pidfd: %w", err)
	}
	if int(got) != res {
		return fmt.Errorf("restorer's pidfd at fd %d, want %d", got, res)
	}
	return nil
}

// restorerPidfd returns a new fd in the task for a pidfd of the restorer,
// for pidfd_getfd; the caller closes it.
func (p *target) restorerPidfd() (uint64, error) {
	if !p.inNS {
		return p.sys(p.pid, unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
	}
	return p.sys(p.pid, unix.SYS_FCNTL, uint64(p.r.ns.reserved), unix.F_DUPFD_CLOEXEC, 0)
}

// queueRestorerPidfd is restorerPidfd as a queued call.
func (p *target) queueRestorerPidfd() sysseq.Ret {
	if !p.inNS {
		return p.q(nil, unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
	}
	return p.q(nil, unix.SYS_FCNTL, uint64(p.r.ns.reserved), unix.F_DUPFD_CLOEXEC, 0)
}

// keepsFD reports a stub fd restoreFDs must not close: the reserved pidfd.
func (p *target) keepsFD(n int) bool {
	return p.inNS && n == p.r.ns.reserved
}

// dropReserved closes the reserved pidfd when the task is released (a
// table shared with another task may have closed it already).
func (p *target) dropReserved() {
	if p.inNS {
		p.sys(p.pid, unix.SYS_CLOSE, uint64(p.r.ns.reserved))
	}
}

// errPidTaken is added to a "pid in use" error of a plain restore.
var errPidTaken = errors.New("restore with --pidns to give the tree a new pid namespace, where its pids are free")

// idFree says who holds pid n, if anybody does (pidHolder), and how to
// restore all the same.
func idFree(n int) error {
	if err := pidHolder(n); err != nil {
		return fmt.Errorf("%w: %w", err, errPidTaken)
	}
	return nil
}
