package dedup

import (
	"errors"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// readerMaxAge is how long a shared read transaction serves ReadPage before
// it is renewed. A read transaction pins the versions it can see, so it
// must not live long: Remove and GC need their deletes to become
// collectable.
const readerMaxAge = time.Second

// errNoReader says the shared transaction cannot be used now.
var errNoReader = errors.New("no shared read transaction")

// sharedReader is one read-only Badger transaction used by concurrent
// ReadPage calls, which saves the cost of a transaction per page (oracle
// lock, two watermark channel sends, allocations). Pages never change once
// written, so an older snapshot gives the same bytes as a new one; a page
// the snapshot lacks (stored after it began) or any read error renews the
// snapshot and ReadPage retries in a fresh transaction of its own, so
// nothing is reported missing that a fresh transaction would find.
//
// Read-only Txn.Get and Item.Value only read the transaction's fields, so
// sharing one between goroutines is safe; mu keeps Discard away from
// readers in flight.
type sharedReader struct {
	db *badger.DB

	mu       sync.RWMutex
	txn      *badger.Txn // nil: none yet, or renewal due
	born     time.Time
	disabled int // > 0 while GC runs: every ReadPage uses its own txn
}

// view runs f in the shared transaction. It returns errNoReader if there
// is none to use; an error of f drops the transaction (the next call
// starts another).
func (r *sharedReader) view(f func(txn *badger.Txn) error) error {
	for range 2 {
		txn, err, ok := r.tryView(f)
		if ok {
			if err != nil {
				r.drop(txn)
			}
			return err
		}
		if !r.renew(txn) {
			return errNoReader
		}
	}
	return errNoReader
}

// tryView runs f in the shared transaction if it is fresh (ok), under
// the read lock, released however f ends: a panic of Badger on a damaged
// table becomes an error instead of leaving the lock held (every later
// read would block).
func (r *sharedReader) tryView(f func(txn *badger.Txn) error) (txn *badger.Txn, err error, ok bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	txn = r.txn
	if txn == nil || time.Since(r.born) >= readerMaxAge {
		return txn, nil, false
	}
	ok = true
	defer recoverBadger(&err, "read")
	err = f(txn)
	return txn, err, ok
}

// renew replaces the shared transaction old (nil: none) by a new one,
// unless another goroutine did so already. It returns false if sharing is
// disabled.
func (r *sharedReader) renew(old *badger.Txn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.disabled > 0 {
		return false
	}
	if r.txn == old {
		if r.txn != nil {
			r.txn.Discard()
		}
		r.txn, r.born = r.db.NewTransaction(false), time.Now()
	}
	return true
}

// drop discards the shared transaction if it is still old.
func (r *sharedReader) drop(old *badger.Txn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.txn == old && old != nil {
		old.Discard()
		r.txn = nil
	}
}

// disable discards the shared transaction and stops sharing until enable:
// GC calls it so that no snapshot older than its deletes and value-log
// rewrites outlives them.
func (r *sharedReader) disable() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.disabled++
	if r.txn != nil {
		r.txn.Discard()
		r.txn = nil
	}
}

func (r *sharedReader) enable() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.disabled--
}
