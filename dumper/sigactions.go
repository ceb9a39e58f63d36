package dumper

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/testhold"
)

// readSigactions returns the signal handlers of the frozen process pid,
// signals 1..64 in order. There is no /proc file for them:
// rt_sigaction(sig, NULL, &old) is injected into the main thread, with a
// scratch buffer below its stack's red zone whose bytes are put back
// afterwards, as are the registers. Only the signals in query are asked
// (an injection costs tens of microseconds); the others are recorded as
// SIG_DFL with no flags.
func readSigactions(pid int, tramp uint64, query uint64) (_ []image.Sigaction, err error) {
	st, err := inject.Save(pid)
	if err != nil {
		return nil, err
	}
	defer func() {
		resumeSyscall(&st.Regs)
		if err2 := st.Restore(pid); err2 != nil && err == nil {
			err = err2
		}
	}()
	const size = 32 // struct kernel_sigaction: handler, flags, restorer, mask
	scratch := (st.Regs.Rsp - 128 - 4096) &^ 15
	saved := make([]byte, size)
	if err := inject.ReadMem(pid, scratch, saved); err != nil {
		return nil, fmt.Errorf("stack of %d: %w", pid, err)
	}
	defer func() {
		if err2 := inject.WriteMem(pid, scratch, saved); err2 != nil && err == nil {
			err = err2
		}
	}()
	var out []image.Sigaction
	buf := make([]byte, size)
	for sig := 1; sig <= 64; sig++ {
		if query&(1<<(sig-1)) == 0 {
			out = append(out, image.Sigaction{Signo: sig})
			continue
		}
		if _, err := inject.Syscall(pid, tramp, unix.SYS_RT_SIGACTION, uint64(sig), 0, scratch, 8); err != nil {
			return nil, fmt.Errorf("rt_sigaction(%d): %w", sig, err)
		}
		testhold.At("inject")
		if err := inject.ReadMem(pid, scratch, buf); err != nil {
			return nil, err
		}
		le := binary.LittleEndian
		out = append(out, image.Sigaction{Signo: sig, Handler: le.Uint64(buf), Flags: le.Uint64(buf[8:]),
			Restorer: le.Uint64(buf[16:]), Mask: le.Uint64(buf[24:])})
	}
	return out, nil
}

// resumeSyscall turns the registers of a thread stopped inside an
// interrupted syscall into ones that re-enter it once resumed. The kernel
// does this itself on the way out of an interrupt stop, but not after the
// thread was stopped again at an injected syscall's exit.
func resumeSyscall(r *image.Regs) {
	if !image.InterruptedSyscall(r) {
		return
	}
	if -int64(r.Rax) == image.ERestartRestartBlock {
		r.Orig_rax = image.NrRestartSyscall // the kernel kept the restart block
	}
	image.ReenterSyscall(r)
}

// sigactionsToAsk returns the signals whose handlers must be read, from
// /proc/<pid>/status: those caught (SigCgt) or ignored (SigIgn), and
// SIGCHLD always, whose SA_NOCLDWAIT and SA_NOCLDSTOP matter even with
// SIG_DFL. A default action with other flags or a mask behaves as with none.
func sigactionsToAsk(status map[string]string) (uint64, error) {
	q := uint64(1) << (unix.SIGCHLD - 1)
	for _, k := range []string{"SigCgt", "SigIgn"} {
		v, err := strconv.ParseUint(status[k], 16, 64)
		if err != nil {
			return 0, fmt.Errorf("status %s %q: %w", k, status[k], err)
		}
		q |= v
	}
	return q, nil
}
