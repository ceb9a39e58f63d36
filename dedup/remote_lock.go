package dedup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// Locks of a remote store, after restic's (internal/restic/lock.go):
// every process that opens the store writes an object locks/<random>
// naming its host, pid and time, shared or exclusive, rewrites it every
// remoteLockRefresh and deletes it when done. A lock not refreshed for
// remoteLockStale (its process died) is ignored. A process takes its lock
// first and then looks at the others: an exclusive lock (gc) conflicts
// with every other one, so gc never deletes a pack a dump on another host
// is about to reference, and a dump never starts under a gc. When both
// look at once both may give up, never both go on.
const (
	remoteLocks       = "locks/"
	remoteLockRefresh = 5 * time.Minute
	remoteLockStale   = 30 * time.Minute
)

// RemoteHost overrides the host name written into locks (tests acting as
// several hosts).
var RemoteHost = ""

// lockInfo is a lock object's body.
type lockInfo struct {
	Time      time.Time `json:"time"`
	Exclusive bool      `json:"exclusive"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
}

func (l lockInfo) String() string {
	kind := "shared"
	if l.Exclusive {
		kind = "exclusive"
	}
	return fmt.Sprintf("%s lock of pid %d on %s, refreshed %s", kind, l.PID, l.Host, l.Time.UTC().Format(time.RFC3339))
}

// remoteLock is a lock this process holds.
type remoteLock struct {
	obj  Objects
	name string
	info lockInfo
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

func takeLock(ctx context.Context, obj Objects, exclusive bool) (*remoteLock, error) {
	host := RemoteHost
	if host == "" {
		host, _ = os.Hostname()
	}
	var r [8]byte
	rand.Read(r[:])
	l := &remoteLock{obj: obj, name: remoteLocks + hex.EncodeToString(r[:]),
		info: lockInfo{Time: time.Now(), Exclusive: exclusive, Host: host, PID: os.Getpid()}, stop: make(chan struct{})}
	if err := l.write(ctx); err != nil {
		return nil, fmt.Errorf("lock %s: %w", obj, err)
	}
	if err := checkLocks(ctx, obj, l); err != nil {
		obj.Delete(context.WithoutCancel(ctx), l.name)
		return nil, err
	}
	l.wg.Add(1)
	go l.refresh(ctx)
	return l, nil
}

func (l *remoteLock) write(ctx context.Context) error {
	b, _ := json.Marshal(l.info)
	return l.obj.Put(ctx, l.name, b)
}

func (l *remoteLock) refresh(ctx context.Context) {
	defer l.wg.Done()
	t := time.NewTicker(remoteLockRefresh)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			l.info.Time = time.Now()
			l.write(ctx) // a failed refresh is tried again at the next tick
		}
	}
}

// release stops the refreshes and deletes the lock.
func (l *remoteLock) release() error {
	if l == nil {
		return nil
	}
	var err error
	l.once.Do(func() {
		close(l.stop)
		l.wg.Wait()
		err = l.obj.Delete(context.Background(), l.name)
	})
	return err
}

// checkLocks returns an error wrapping ErrBusy if a live lock of another
// process conflicts with mine.
func checkLocks(ctx context.Context, obj Objects, mine *remoteLock) error {
	objs, err := obj.List(ctx, remoteLocks)
	if err != nil {
		return fmt.Errorf("list locks of %s: %w", obj, err)
	}
	for _, o := range objs {
		if o.Name == mine.name || !strings.HasPrefix(o.Name, remoteLocks) {
			continue
		}
		b, err := obj.Get(ctx, o.Name)
		if errors.Is(err, ErrObjectMissing) {
			continue // released meanwhile
		}
		if err != nil {
			return fmt.Errorf("read lock %s: %w", o.Name, err)
		}
		var info lockInfo
		if json.Unmarshal(b, &info) != nil {
			continue // not a lock of ours: ignored, as a stale one
		}
		if time.Since(info.Time) > remoteLockStale {
			continue
		}
		if info.Exclusive || mine.info.Exclusive {
			return fmt.Errorf("store %s is in use: %s is a %s (%w; a lock not refreshed for %v is ignored)",
				obj, o.Name, info, ErrBusy, remoteLockStale)
		}
	}
	return nil
}
