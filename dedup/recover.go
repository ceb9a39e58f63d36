package dedup

import (
	"fmt"
	"runtime/debug"

	badger "github.com/dgraph-io/badger/v4"
)

// Badger panics on some damaged files instead of returning an error (an
// index out of range decoding a table block or a value log entry, an
// assertion while opening). The store turns such a panic into an error at
// its boundary: a damaged table gives EIO on the read that met it, and the
// mount goes on serving other reads.

// recoverBadger, deferred, turns a panic of Badger (or of decoding what it
// returned) into *err, wrapping ErrDamaged.
func recoverBadger(err *error, what string) {
	p := recover()
	if p == nil {
		return
	}
	if debugPanics {
		fmt.Printf("ckptfs: recovered panic in %s: %v\n%s", what, p, debug.Stack())
	}
	*err = fmt.Errorf("%s: the store's files are damaged (Badger failed: %v): %w", what, p, ErrDamaged)
}

// debugPanics prints the stack of every recovered panic (tests).
var debugPanics = false

// openBadger is badger.Open with its panics turned into errors.
func openBadger(opts badger.Options) (db *badger.DB, err error) {
	defer recoverBadger(&err, "open")
	return badger.Open(opts)
}

// view is db.View with Badger's panics turned into errors.
func view(db *badger.DB, f func(txn *badger.Txn) error) (err error) {
	defer recoverBadger(&err, "read")
	return db.View(f)
}
