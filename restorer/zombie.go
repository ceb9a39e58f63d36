package restorer

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// becomeZombie ends p, just created from its parent (still a stub copy), the
// way the recorded zombie ended: exit_group with its exit status, or death
// by its signal. Once the tracer has reaped its ptrace view, the kernel
// reports the exit to the real parent (SIGCHLD, held pending by the stub's
// mask), which finds an unreaped child with the recorded wait status.
// A core dump is not redone: the 0x80 (WCOREDUMP) bit is lost.
func (p *target) becomeZombie() error {
	status := p.t.ExitCode
	sig := unix.Signal(status & 0x7f)
	if sig == 0 {
		_, err := inject.Syscall(p.pid, p.tramp, unix.SYS_EXIT_GROUP, uint64(status>>8&0xff))
		if !errors.Is(err, inject.ErrExited) {
			return fmt.Errorf("exit_group(%d) did not end it: %v", status>>8&0xff, err)
		}
		return nil
	}
	// No core file from a stub copy.
	if err := unix.Prlimit(p.pid, unix.RLIMIT_CORE, &unix.Rlimit{}, nil); err != nil {
		return fmt.Errorf("prlimit core: %w", err)
	}
	if err := ptrace.SetSigMask(p.pid, 0); err != nil {
		return err
	}
	if err := unix.Kill(p.pid, sig); err != nil {
		return fmt.Errorf("kill %d %v: %w", p.pid, sig, err)
	}
	deliver := 0
	for {
		if err := unix.PtraceCont(p.pid, deliver); err != nil {
			return fmt.Errorf("ptrace cont %d: %w", p.pid, err)
		}
		ws, err := ptrace.Wait(p.pid)
		if err != nil {
			return err
		}
		if ws.Exited() || ws.Signaled() {
			return nil
		}
		deliver = 0
		if ws.Stopped() && ws.StopSignal() == sig && !ptrace.IsEventStop(ws) {
			deliver = int(sig) // its signal-delivery stop: let it kill
		}
	}
}
