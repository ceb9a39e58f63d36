package dedup

import (
	"errors"
	"strings"
)

// remoteError rebuilds an error that came back over the store socket as
// text, so that errors.Is still finds the sentinels a caller acts on
// (exit statuses of the ckptfs command): ErrBusy, ErrLocked, ErrNotStore,
// ErrDamaged, ErrCorrupt, ErrPageMissing, ErrPageCorrupt.
func remoteError(msg string) error {
	for _, e := range []error{ErrBusy, ErrLocked, ErrNotStore, ErrDamaged, ErrPageMissing, ErrPageCorrupt, ErrCorrupt} {
		if strings.Contains(msg, e.Error()) {
			return &remoteErr{msg: msg, is: e}
		}
	}
	return errors.New(msg)
}

type remoteErr struct {
	msg string
	is  error
}

func (e *remoteErr) Error() string { return e.msg }
func (e *remoteErr) Unwrap() error { return e.is }
