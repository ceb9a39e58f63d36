package main

import (
	"context"
	"errors"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/dumper"
	"github.com/ckptfs/ckptfs/restorer"
)

// Exit statuses of ckptfs (docs/cli.md). exitInterrupted and
// exitTerminated (130, 143) are in dump.go.
const (
	exitOK      = 0
	exitError   = 1  // any other failure
	exitUsage   = 2  // bad flags or arguments
	exitRefused = 3  // the tree cannot be checkpointed as it is
	exitNoStore = 10 // the store does not exist or is no store
	exitLocked  = 11 // the store is locked or busy (another process, a dump in progress)
	exitDamaged = 12 // verify (or a read) found damage
)

// usageError is an error in how ckptfs was called: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErr(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

// errDamage marks a command's report of damage (verify's problems).
var errDamage = errors.New("damage found")

// exitCodeOf maps an error to the exit status: the one place that knows
// which failure is which.
func exitCodeOf(err error) int {
	var ue usageError
	var unsupported *dumper.ErrUnsupported
	var notRestorable *dumper.ErrNotRestorable
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &unsupported), errors.As(err, &notRestorable):
		return exitRefused
	case errors.Is(err, dedup.ErrNotStore):
		return exitNoStore
	case errors.Is(err, dedup.ErrLocked), errors.Is(err, dedup.ErrBusy):
		return exitLocked
	case errors.Is(err, errDamage), errors.Is(err, dedup.ErrDamaged), errors.Is(err, dedup.ErrCorrupt),
		errors.Is(err, dedup.ErrPageCorrupt), errors.Is(err, dedup.ErrPageMissing),
		errors.Is(err, restorer.ErrPageMismatch):
		return exitDamaged
	case errors.Is(err, dumper.ErrAborted), errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	return exitError
}

// exitCodeName is the name of an exit status in JSON error messages.
func exitCodeName(code int) string {
	switch code {
	case exitOK:
		return "ok"
	case exitUsage:
		return "usage"
	case exitRefused:
		return "refused"
	case exitNoStore:
		return "no_store"
	case exitLocked:
		return "locked"
	case exitDamaged:
		return "damaged"
	case exitInterrupted:
		return "interrupted"
	case exitTerminated:
		return "terminated"
	}
	return "error"
}
