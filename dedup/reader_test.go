package dedup

import (
	"errors"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// TestSharedReaderPanic: a Badger panic inside a shared read (as on a
// damaged table) becomes an error wrapping ErrDamaged, and the reader's
// lock is free again: later reads and a renewal do not block.
func TestSharedReaderPanic(t *testing.T) {
	s := openT(t)
	r := s.reader
	// A fresh transaction, then a read that panics in it.
	if err := r.view(func(*badger.Txn) error { return nil }); err != nil {
		t.Fatal(err)
	}
	err := r.view(func(*badger.Txn) error { panic("index out of range [7] with length 3") })
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("panicking read: %v, want ErrDamaged", err)
	}
	done := make(chan error, 1)
	go func() {
		r.disable() // takes the write lock
		r.enable()
		done <- r.view(func(*badger.Txn) error { return nil })
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read after the panic: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the shared reader's lock is still held after a panic")
	}
	// The store's own fallback path too.
	err = view(s.db, func(*badger.Txn) error { panic("boom") })
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("view: %v", err)
	}
}
