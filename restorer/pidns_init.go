package restorer

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/ptrace"
	"github.com/ckptfs/ckptfs/internal/stub"
)

// The pid namespace's init (pidns.go): the stub copy at pid 1, released
// last, or killed with the whole namespace when the restore fails.

// releaseInit turns the namespace's pid 1, when it is our init, into the
// init (stub.InitEntry) and lets it run: it holds no fd, sits in /, is
// named ckptfs-init, and gets SIGHUP, SIGINT, SIGTERM and SIGCHLD with
// their default actions (the restorer may have been started ignoring one).
func (r *restorer) releaseInit() error {
	if r.ns == nil || !r.ns.isInit {
		return nil
	}
	p := r.ns.first
	if _, err := p.sys(p.pid, unix.SYS_CLOSE_RANGE, 0, uint64(^uint32(0)), 0); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	slash, err := p.cstr(0, "/")
	if err != nil {
		return err
	}
	if _, err := p.sys(p.pid, unix.SYS_CHDIR, slash); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	name, err := p.cstr(0, "ckptfs-init")
	if err != nil {
		return err
	}
	if _, err := p.sys(p.pid, unix.SYS_PRCTL, unix.PR_SET_NAME, name); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	dfl, err := p.put(0, make([]byte, 32))
	if err != nil {
		return err
	}
	for _, sig := range []unix.Signal{unix.SIGHUP, unix.SIGINT, unix.SIGTERM, unix.SIGCHLD} {
		if _, err := p.sys(p.pid, unix.SYS_RT_SIGACTION, uint64(sig), dfl, 0, 8); err != nil {
			return fmt.Errorf("init: sigaction %d: %w", sig, err)
		}
	}
	regs, err := ptrace.GetRegs(p.pid)
	if err != nil {
		return err
	}
	regs.Rip, regs.R12, regs.Orig_rax = stub.InitEntry, uint64(r.c.Task(r.c.RootPID).InnerPID()), ^uint64(0)
	if err := ptrace.SetRegs(p.pid, regs); err != nil {
		return err
	}
	if err := ptrace.SetSigMask(p.pid, inject.AllSignals); err != nil {
		return err
	}
	if err := ptrace.Detach(p.pid, 0); err != nil {
		return err
	}
	r.ns.first = nil // running: killNamespace has no more to do
	return nil
}

// killNamespace kills the namespace's init (and so every task in it) and
// reaps it, after a failed restore.
func (r *restorer) killNamespace() {
	if r.ns == nil || !r.ns.isInit || r.ns.first == nil {
		return
	}
	pid := r.ns.first.pid
	unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, unix.WALL, nil)
	unix.Wait4(pid, &ws, unix.WALL|unix.WNOHANG, nil)
	r.ns.first = nil
}
