//go:build linux && amd64

package inject

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// Prctls is the per-thread state only prctl inside the thread reads:
// securebits, the parent-death signal, and the process' dumpable flag
// (read in the main thread only).
type Prctls struct {
	SecureBits uint64
	PDeathSig  int
	Dumpable   int
}

// prctlCalls reads them with prctl(PR_GET_SECUREBITS), (PR_GET_PDEATHSIG,
// scratch) and, if dumpable, (PR_GET_DUMPABLE) injected into tid, in its
// ExtrasJob, whose Batch puts the thread back.
func prctlCalls(tid int, scratch uint64, dumpable bool, p *Prctls) []Call {
	calls := []Call{
		{Name: "securebits", Nr: unix.SYS_PRCTL, Args: []uint64{unix.PR_GET_SECUREBITS}, Done: func(v uint64) error {
			p.SecureBits = v
			return nil
		}},
		{Name: "pdeathsig", Nr: unix.SYS_PRCTL, Args: []uint64{unix.PR_GET_PDEATHSIG, scratch}, Done: func(uint64) error {
			b := make([]byte, 4)
			if err := ReadMem(tid, scratch, b); err != nil {
				return err
			}
			p.PDeathSig = int(int32(binary.LittleEndian.Uint32(b)))
			return nil
		}},
	}
	if dumpable {
		calls = append(calls, Call{Name: "dumpable", Nr: unix.SYS_PRCTL, Args: []uint64{unix.PR_GET_DUMPABLE}, Done: func(v uint64) error {
			p.Dumpable = int(v)
			return nil
		}})
	}
	return calls
}
