package restorer

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// The lazy fill's progress (Options.LazyWait): a restore that waits for
// the fill says so in its Done message; the page server then keeps the
// control socket and sends, a few times a second and once at the end,
// how many pages are in of how many are to come, and the restore reports
// them to Options.OnProgress as phase PhaseFill.

// PhaseFill is the lazy fill of a restore that waits for it: bytes of
// memory the page server copied in (filled in the background, or on a
// fault), of the bytes it has to fill.
const PhaseFill = "fill"

// ErrLazyFill says the processes of a lazy restore run but some of their
// pages could not be served (the page server's log says which): Restore
// returns it, wrapped, with the root pid.
var ErrLazyFill = errors.New("lazy fill failed")

// fillCount counts the pages of every address space the server serves.
// A page is filled (copied in or poisoned) or dropped without a copy (a
// hole of its pagemap, unmapped by the program): pages+filled-dropped is
// what there is to fill. A space that closes before every page is in
// (its process exited) takes the rest off pages.
type fillCount struct {
	pages, dropped, filled atomic.Int64
}

// progress returns pages filled and to fill.
func (f *fillCount) progress() (filled, total int64) {
	filled = f.filled.Load()
	return filled, max(filled, f.pages.Load()-f.dropped.Load()+filled)
}

// lazyFill is the server's report to a restore that waits.
type lazyFill struct {
	Filled, Total int64 // pages
	End           bool  `json:",omitempty"` // every address space is closed
	Failed        bool  `json:",omitempty"` // some pages could not be served
}

// fillReportEvery is how often the server reports the fill.
const fillReportEvery = 200 * time.Millisecond

// reportFill sends the fill's progress on the control socket fd until
// srv.filled is closed, then the last report. It ends early if the
// restore is gone (the fill goes on).
func (srv *lazyServer) reportFill(fd int) {
	defer close(srv.reported)
	send := func(end bool) error {
		f := lazyFill{End: end, Failed: end && (srv.failedA.Load() || srv.aborted.Load())}
		f.Filled, f.Total = srv.filling.progress()
		b, err := json.Marshal(f)
		if err != nil {
			return err
		}
		return unix.Sendmsg(fd, b, nil, nil, unix.MSG_NOSIGNAL)
	}
	t := time.NewTicker(fillReportEvery)
	defer t.Stop()
	if send(false) != nil { // the fill's start
		return
	}
	for {
		select {
		case <-srv.finished:
			send(true)
			return
		case <-t.C:
			if err := send(false); err != nil {
				srv.logf("fill report: %v: the restore does not wait any more", err)
				return
			}
		}
	}
}

// waitFill reads the server's fill reports until the last one, telling
// onProgress (if set) the bytes filled; it closes the connection. An
// error if the fill failed or the server ended without its last report.
func (c *lazyClient) waitFill(onProgress func(phase string, done, total int64)) error {
	defer c.abort()
	buf := make([]byte, 4096)
	for {
		n, _, _, _, err := unix.Recvmsg(c.sock, buf, nil, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("lazy page server (pid %d, log %s): %w", c.pid, c.log, err)
		}
		if n == 0 {
			return fmt.Errorf("%w: the lazy page server (pid %d) ended before the fill was complete (log %s)", ErrLazyFill, c.pid, c.log)
		}
		var f lazyFill
		if err := json.Unmarshal(buf[:n], &f); err != nil {
			return fmt.Errorf("lazy page server (pid %d): fill report: %w", c.pid, err)
		}
		if onProgress != nil {
			onProgress(PhaseFill, f.Filled*image.PageSize, f.Total*image.PageSize)
		}
		if f.End {
			if f.Failed {
				return fmt.Errorf("%w: some pages could not be served (log %s)", ErrLazyFill, c.log)
			}
			return nil
		}
	}
}
