package dedup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitRepoWaitsItsTurn: while a store is held by a process that does
// not serve it, WaitRepo waits (saying so once) and gets it once it is
// free; a cancelled wait gives up.
func TestWaitRepoWaitsItsTurn(t *testing.T) {
	defer func(d time.Duration) { WaitNotice = d }(WaitNotice)
	WaitNotice = 50 * time.Millisecond
	dir := filepath.Join(t.TempDir(), "store")
	held, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	var told atomic.Int32
	got := make(chan error, 1)
	go func() {
		r, err := WaitRepo(context.Background(), dir, func(string) { told.Add(1) })
		if err == nil {
			_, err = r.List()
			r.Close()
		}
		got <- err
	}()
	ctx, cancel := context.WithCancel(context.Background())
	cancelled := make(chan error, 1)
	go func() {
		_, err := WaitRepo(ctx, dir, nil)
		cancelled <- err
	}()
	for told.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait: %v", err)
	}
	select {
	case err := <-got:
		t.Fatalf("WaitRepo returned while the store was held: %v", err)
	default:
	}
	held.Close()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if n := told.Load(); n != 1 {
		t.Errorf("notice called %d times, want 1", n)
	}
}

// reopening closes a store, then opens it again for itself: another
// command that got hold of it meanwhile.
type reopening struct {
	*Store
	other *Store
}

func (r *reopening) Close() error {
	r.Store.Close()
	var err error
	r.other, err = Open(r.dir)
	return err
}

// TestCloseAndRemove: a store nobody else opened is removed; one that
// another command holds is kept.
func TestCloseAndRemove(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := CloseAndRemove(s, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("store still there: %v", err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := &reopening{Store: s}
	if err := CloseAndRemove(r, dir); err == nil {
		t.Error("CloseAndRemove of a store held by another command succeeded")
	}
	if r.other == nil {
		t.Fatal("the other command could not open the store")
	}
	r.other.Close()
	if _, err := os.Stat(filepath.Join(dir, lockName)); err != nil {
		t.Fatalf("store held by another command removed: %v", err)
	}
}

// TestLockReplacedFile: a lock taken on a lock file that was replaced
// meanwhile is taken again on the new file.
func TestLockReplacedFile(t *testing.T) {
	dir := t.TempDir()
	old, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := os.Remove(filepath.Join(dir, lockName)); err != nil {
		t.Fatal(err)
	}
	f, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !samePath(f, filepath.Join(dir, lockName)) {
		t.Error("lock is not on the file at the path")
	}
	if samePath(old, filepath.Join(dir, lockName)) {
		t.Error("the removed file still looks like the lock")
	}
}
