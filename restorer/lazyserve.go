package restorer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/testhold"
)

// The lazy page server: a process of ckptfs (`ckptfs lazy-serve`, started
// by a lazy restore in a session of its own) that outlives the restore.
// The restorer hands it, task by task, the task's userfaultfd (every
// anonymous private vma with saved pages registered for missing pages)
// and where those pages are; it answers faults at once and fills the
// rest in address order with large UFFDIO_COPYs, every page checked
// against its pagemap hash first. A page that does not match is poisoned
// (the program gets SIGBUS if it touches it); when the pages cannot be
// read at all (the store unmounted) every page not yet in is poisoned and
// the process gets SIGBUS. The server closes each userfaultfd once every
// page of its address space is in, and exits when all are closed.

// lazyTask is the restorer's message to the server for one task (with
// the task's userfaultfd attached).
type lazyTask struct {
	PID  int
	VMAs []lazyVMA
}

// lazyCtl is a message from the restorer: a task, or the end.
type lazyCtl struct {
	Task *lazyTask `json:",omitempty"`
	// Done: every task is released; no more tasks come.
	Done bool `json:",omitempty"`
	// Watch (with Done): the restore waits for the fill; report it on
	// the socket (lazyfill.go).
	Watch bool `json:",omitempty"`
}

type lazyServer struct {
	log    *log.Logger
	start  time.Time
	source PageSource

	spaces  sync.WaitGroup
	work    chan lazyChunk
	aborted atomic.Bool
	failedA atomic.Bool

	// filling counts the pages in, for a restore that waits (lazyfill.go);
	// finished is closed once every space is, reported once the last
	// report is sent (nil: no restore waits).
	filling  fillCount
	finished chan struct{}
	reported chan struct{}
}

type lazyChunk struct {
	s      *lazySpace
	src    *lazySource
	lo, hi int
	done   *sync.WaitGroup
}

func (srv *lazyServer) logf(format string, args ...any) { srv.log.Printf(format, args...) }

func (srv *lazyServer) since() time.Duration { return time.Since(srv.start).Round(time.Millisecond) }

func (srv *lazyServer) setFailed() { srv.failedA.Store(true) }

// ServeLazy runs the page server on the control socket ctl (from the
// restorer), logging to logw; since is when the restore began. It returns
// once every address space is filled, failed or gone; an error if any
// failed.
func ServeLazy(ctl *os.File, since time.Time, logw io.Writer, source PageSource) error {
	closeInherited()
	if source == nil {
		source = treePages{}
	}
	srv := &lazyServer{log: log.New(logw, "ckptfs lazy-serve: ", log.LstdFlags|log.Lmicroseconds), start: since, source: source,
		work: make(chan lazyChunk, 2*writers), finished: make(chan struct{})}
	srv.logf("pid %d serving", os.Getpid())
	for range writers {
		go srv.chunkWorker()
	}
	srv.spaces.Add(1) // the control socket, until Done or EOF
	go func() {
		defer srv.spaces.Done()
		if err := srv.readCtl(ctl); err != nil {
			srv.logf("%v: closing every userfaultfd", err)
			srv.aborted.Store(true)
		}
	}()
	srv.spaces.Wait()
	close(srv.finished)
	if srv.reported != nil {
		<-srv.reported
	}
	runtime.KeepAlive(ctl) // the fill reports use it
	if srv.aborted.Load() {
		return errors.New("the restore did not finish: pages left unserved (its tasks are killed)")
	}
	if srv.failedA.Load() {
		srv.logf("done, with failures, %s since restore began", srv.since())
		return errors.New("some pages could not be served (see the log)")
	}
	srv.logf("all pages in, %s since restore began", srv.since())
	return nil
}

// readCtl receives tasks until Done.
func (srv *lazyServer) readCtl(ctl *os.File) error {
	defer runtime.KeepAlive(ctl) // else its finalizer closes the socket
	fd := int(ctl.Fd())
	buf := make([]byte, lazyMsgMax)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("control socket: %w", err)
		}
		if n == 0 {
			return errors.New("restore ended before releasing its tasks")
		}
		ufd := -1
		if oobn > 0 {
			cms, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err == nil && len(cms) > 0 {
				if fds, err := unix.ParseUnixRights(&cms[0]); err == nil && len(fds) > 0 {
					ufd = fds[0]
				}
			}
		}
		var m lazyCtl
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			return fmt.Errorf("control message: %w", err)
		}
		if m.Done {
			srv.logf("restore released its tasks, %s since it began", srv.since())
			if m.Watch {
				srv.reported = make(chan struct{})
				go srv.reportFill(fd)
			}
			return nil
		}
		if m.Task == nil || ufd < 0 {
			return errors.New("control message without a task and its userfaultfd")
		}
		srv.addTask(m.Task, ufd)
	}
}

// addTask starts serving a task's address space.
func (srv *lazyServer) addTask(t *lazyTask, ufd int) {
	name := fmt.Sprintf("task %d", t.PID)
	pidfd, err := unix.PidfdOpen(t.PID, 0)
	if err != nil {
		pidfd = -1
	}
	var good []*lazySource
	for _, v := range t.VMAs {
		good = append(good, newLazySource(srv.source, t.PID, v))
	}
	sort.Slice(good, func(i, j int) bool { return good[i].start < good[j].start })
	s := newLazySpace(srv, name, ufd, pidfd, good)
	srv.logf("%s: %d vmas, %d pages, %s since restore began", name, len(good), s.left.Load(), srv.since())
	srv.spaces.Add(1)
	go s.serve()
	go srv.fill(s)
}

// forked starts serving the space of a child forked from s (under s.mu).
func (srv *lazyServer) forked(s *lazySpace, fd int) {
	c := s.child(fd)
	srv.logf("%s: forked, %d pages left", c.name, c.left.Load())
	if s.failed.Load() {
		c.failed.Store(true)
	}
	srv.spaces.Add(1)
	go c.serve()
	go srv.fill(c)
}

// fillChunk is how many pages a background copy takes at once.
const fillChunk = 512

// fill is the background pass of one space: every needed page, in
// address order, in chunks of fillChunk pages, until none is left.
func (srv *lazyServer) fill(s *lazySpace) {
	testhold.At("lazy-fill")
	testhold.At("lazy-fill-" + strings.ReplaceAll(s.name, " ", "-")) // lazy-fill-task-<pid>
	for s.left.Load() > 0 && !s.gone.Load() && !s.failed.Load() && !srv.aborted.Load() {
		var wg sync.WaitGroup
		for _, src := range s.srcs {
			if err := s.ready(src); err != nil {
				s.fail(err)
				break
			}
			need := s.need[src]
			for lo := 0; lo < src.pages(); lo += fillChunk {
				hi := min(lo+fillChunk, src.pages())
				if s.gone.Load() || s.failed.Load() || !need.any(lo, hi) {
					continue
				}
				wg.Add(1)
				srv.work <- lazyChunk{s: s, src: src, lo: lo, hi: hi, done: &wg}
			}
		}
		before := s.left.Load()
		wg.Wait()
		if s.left.Load() > 0 && s.left.Load() == before {
			s.dropUnmapped()
		}
		if s.left.Load() > 0 {
			time.Sleep(time.Millisecond) // pages in flight elsewhere
		}
	}
	s.poke()
}

func (srv *lazyServer) chunkWorker() {
	debug.SetPanicOnFault(true)
	for c := range srv.work {
		if err := srv.loadSafe(c.s, c.src, c.lo, c.hi); err != nil {
			c.s.fail(err)
		}
		c.done.Done()
	}
}

// serveFault serves one fault on a goroutine of its own: one waiting
// for a large vma's pagemap holds up no other.
func serveFault(s *lazySpace, addr uint64) {
	debug.SetPanicOnFault(true)
	defer func() {
		if r := recover(); r != nil {
			s.fail(fmt.Errorf("internal error serving a fault at %#x: %v", addr, r))
		}
	}()
	s.fault(addr)
}

// loadSafe is load with a panic made an error: a bug in the server must
// fail the space (poison, SIGBUS), not end the server, whose end would
// let the kernel map zero pages where pages are missing.
func (srv *lazyServer) loadSafe(s *lazySpace, src *lazySource, lo, hi int) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal error filling %s: %v", src.name(), r)
		}
	}()
	return srv.load(s, src, lo, hi)
}

// load reads pages [lo, hi) of src, checks the ones s still needs against
// their hashes and copies them in. A page that does not match is
// poisoned; a read that fails is an error (the caller fails the space).
func (srv *lazyServer) load(s *lazySpace, src *lazySource, lo, hi int) (err error) {
	if err := s.ready(src); err != nil {
		return err
	}
	need := s.need[src]
	data, err := src.view.Bytes(int64(lo)*image.PageSize, int64(hi-lo)*image.PageSize)
	if err != nil {
		return err
	}
	bad := make([]bool, hi-lo)
	var touched byte
	p := lo
	defer func() {
		if recover() != nil {
			err = fmt.Errorf("%s: page %#x: reading it from %s failed (an I/O error: through a mount, the store may be gone)", src.name(), src.start+uint64(p)*image.PageSize, src.pagesPath)
		}
	}()
	for ; p < hi; p++ {
		if !need.test(p) {
			continue
		}
		page := data[(p-lo)*image.PageSize : (p-lo+1)*image.PageSize]
		if src.storeChecked {
			touched ^= page[0] // fault it in here, where a failed read is caught
			continue
		}
		if got := pageSum(page); got != src.hashes[p] {
			bad[p-lo] = true
			srv.logf("%s: %s: page %#x: %v: its content hashes to %s, pagemap says %s: poisoned (a touch raises SIGBUS)", s.name, src.name(), src.start+uint64(p)*image.PageSize, ErrPageMismatch, got, src.hashes[p])
			srv.setFailed()
		}
	}
	_ = touched
	return s.copyIn(src, lo, data, bad)
}

// lazyMsgMax bounds one control message.
const lazyMsgMax = 8 << 20

// closeInherited closes the fds above 3 that the server inherited: every
// fd without close-on-exec (all of Go's own have it). A pipe end the
// restorer had open must not stay open for as long as the server runs.
func closeInherited() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 3 {
			continue
		}
		if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && fl&unix.FD_CLOEXEC == 0 {
			unix.Close(fd)
		}
	}
}
