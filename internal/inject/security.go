package inject

import (
	"encoding/binary"
	"fmt"

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

// GetPrctls reads them with prctl(PR_GET_SECUREBITS), (PR_GET_PDEATHSIG,
// scratch) and, if dumpable, (PR_GET_DUMPABLE) injected into tid, in the
// batch of the caller (ReadExtras), whose Save/Restop puts the thread back.
func GetPrctls(tid int, trampoline, scratch uint64, dumpable bool) (Prctls, error) {
	var p Prctls
	v, err := Syscall(tid, trampoline, unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
	if err != nil {
		return p, fmt.Errorf("securebits of %d: %w", tid, err)
	}
	p.SecureBits = v
	if _, err := Syscall(tid, trampoline, unix.SYS_PRCTL, unix.PR_GET_PDEATHSIG, scratch); err != nil {
		return p, fmt.Errorf("pdeathsig of %d: %w", tid, err)
	}
	b := make([]byte, 4)
	if err := ReadMem(tid, scratch, b); err != nil {
		return p, err
	}
	p.PDeathSig = int(int32(binary.LittleEndian.Uint32(b)))
	if !dumpable {
		return p, nil
	}
	if v, err = Syscall(tid, trampoline, unix.SYS_PRCTL, unix.PR_GET_DUMPABLE); err != nil {
		return p, fmt.Errorf("dumpable of %d: %w", tid, err)
	}
	p.Dumpable = int(v)
	return p, nil
}
