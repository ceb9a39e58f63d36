package dumper

import (
	"encoding/binary"
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/inject"
)

// sigactionCalls returns the calls that read the signal handlers of the
// frozen process of t into t.Sigactions, signals 1..64 in order. There is
// no /proc file for them: rt_sigaction(sig, NULL, scratch) is injected
// into the main thread, in its inject.ExtrasJob (one save and one restop
// for all the thread's injected calls, which put back the scratch bytes,
// the registers and the mask). Only the signals in query are asked (an
// injection costs tens of microseconds); the others are recorded as
// SIG_DFL with no flags.
func sigactionCalls(t *image.Task, tramp, scratch uint64, query uint64) []inject.Call {
	const size = 32 // struct kernel_sigaction: handler, flags, restorer, mask
	t.Sigactions = make([]image.Sigaction, 64)
	var calls []inject.Call
	for sig := 1; sig <= 64; sig++ {
		t.Sigactions[sig-1] = image.Sigaction{Signo: sig}
		if query&(1<<(sig-1)) == 0 {
			continue
		}
		calls = append(calls, inject.Call{Name: fmt.Sprintf("rt_sigaction(%d)", sig), Nr: unix.SYS_RT_SIGACTION,
			Args: []uint64{uint64(sig), 0, scratch, 8}, Hold: true, Done: func(uint64) error {
				buf := make([]byte, size)
				if err := inject.ReadMem(t.PID, scratch, buf); err != nil {
					return fmt.Errorf("signal handlers of %d: %w", t.PID, err)
				}
				le := binary.LittleEndian
				t.Sigactions[sig-1] = image.Sigaction{Signo: sig, Handler: le.Uint64(buf), Flags: le.Uint64(buf[8:]),
					Restorer: le.Uint64(buf[16:]), Mask: le.Uint64(buf[24:])}
				return nil
			}})
	}
	return calls
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
