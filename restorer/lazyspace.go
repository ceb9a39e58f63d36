package restorer

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/uffd"
)

// lazySpace is one address space the page server fills: a restored
// process, or a child one forked while pages were missing, with its
// userfaultfd.
//
// Which pages it still needs is kept per source page (need), so that an
// mremap only moves regions (address -> source page). Events are applied
// under mu's write lock, right when they are read: the kernel lets the
// mremap, munmap or madvise go on once its event is read, and no
// UFFDIO_COPY (each under the read lock) can land between the two. A copy
// that races an event not yet read fails with EAGAIN and is retried.
type lazySpace struct {
	srv   *lazyServer
	name  string
	pidfd int // -1 for a forked child (its pid is not known)
	fd    int

	mu      sync.RWMutex
	closed  bool
	regions []lazyRegion // sorted by start
	srcs    []*lazySource
	need    map[*lazySource]bitset
	trimmed map[*lazySource]*sync.Once

	left   atomic.Int64 // pages still needed
	gone   atomic.Bool  // the address space is gone (ESRCH)
	failed atomic.Bool
	faults atomic.Int64
	wake   chan struct{} // the event loop: look at left/gone now
}

type lazyRegion struct {
	start, end uint64
	src        *lazySource
	first      int // source page at start
}

func (r lazyRegion) pages() int { return int((r.end - r.start) / image.PageSize) }

func newLazySpace(srv *lazyServer, name string, fd, pidfd int, srcs []*lazySource) *lazySpace {
	s := &lazySpace{srv: srv, name: name, fd: fd, pidfd: pidfd, srcs: srcs, need: map[*lazySource]bitset{},
		trimmed: map[*lazySource]*sync.Once{}, wake: make(chan struct{}, 1)}
	for _, src := range srcs {
		s.regions = append(s.regions, lazyRegion{start: src.start, end: src.end, src: src})
		// Every page, until the source is loaded and ready trims
		// what its pagemap does not list.
		s.need[src] = fullBitset(src.pages())
		s.trimmed[src] = new(sync.Once)
		s.left.Add(int64(src.pages()))
	}
	srv.filling.pages.Add(s.left.Load())
	slices.SortFunc(s.regions, func(a, b lazyRegion) int { return cmpU64(a.start, b.start) })
	return s
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *lazySpace) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// lookup finds the source page at addr (under mu).
func (s *lazySpace) lookup(addr uint64) (*lazySource, int, bool) {
	i, _ := slices.BinarySearchFunc(s.regions, addr, func(r lazyRegion, a uint64) int {
		if r.end <= a {
			return -1
		}
		if r.start > a {
			return 1
		}
		return 0
	})
	if i >= len(s.regions) || addr < s.regions[i].start || addr >= s.regions[i].end {
		return nil, 0, false
	}
	r := s.regions[i]
	return r.src, r.first + int((addr-r.start)/image.PageSize), true
}

// ready waits until src is loaded and drops from what s needs the pages
// its pagemap does not list (they read zero).
func (s *lazySpace) ready(src *lazySource) error {
	if err := src.wait(); err != nil {
		return err
	}
	s.trimmed[src].Do(func() {
		for p := range src.pages() {
			if !src.listed.test(p) {
				s.drop(src, p)
			}
		}
	})
	return nil
}

func (s *lazySpace) drop(src *lazySource, p int) {
	if !s.need[src].clear(p) {
		return
	}
	s.srv.filling.dropped.Add(1)
	if s.left.Add(-1) == 0 {
		s.poke()
	}
}

// copyIn copies the pages [p0, p0+len(data)/PageSize) of src that are
// still needed to wherever they are mapped now; a page marked bad is
// poisoned instead (a touch raises SIGBUS).
func (s *lazySpace) copyIn(src *lazySource, p0 int, data []byte, bad []bool) error {
	n := len(data) / image.PageSize
	for {
		again, err := s.copyOnce(src, p0, n, data, bad)
		if err != nil || !again {
			return err
		}
		time.Sleep(50 * time.Microsecond) // an event is being read
	}
}

func (s *lazySpace) copyOnce(src *lazySource, p0, n int, data []byte, bad []bool) (bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false, nil
	}
	need := s.need[src]
	for _, r := range s.regions {
		if r.src != src {
			continue
		}
		lo, hi := max(p0, r.first), min(p0+n, r.first+r.pages())
		for p := lo; p < hi; {
			if !need.test(p) {
				p++
				continue
			}
			addr := r.start + uint64(p-r.first)*image.PageSize
			if bad[p-p0] {
				if err := uffd.Poison(s.fd, addr, image.PageSize); err != nil && !errors.Is(err, unix.EEXIST) {
					s.srv.logf("%s: poison page %#x: %v", s.name, addr, err)
				}
				s.drop(src, p)
				s.srv.filling.filled.Add(1)
				p++
				continue
			}
			q := p + 1
			for q < hi && need.test(q) && !bad[q-p0] {
				q++
			}
			done, err := uffd.Copy(s.fd, addr, data[(p-p0)*image.PageSize:(q-p0)*image.PageSize])
			for i := p; i < p+done/image.PageSize; i++ {
				s.drop(src, i)
			}
			s.srv.filling.filled.Add(int64(done / image.PageSize))
			p += done / image.PageSize
			switch {
			case err == nil:
			case errors.Is(err, unix.EEXIST):
				s.drop(src, p) // present already (a fault's copy, or inherited)
				s.srv.filling.filled.Add(1)
				p++
			case errors.Is(err, unix.EAGAIN):
				return true, nil
			case errors.Is(err, unix.ESRCH):
				s.gone.Store(true)
				s.poke()
				return false, nil
			case errors.Is(err, unix.ENOENT):
				// No longer registered there: unmapped, its event
				// on the way. Nothing to fill.
				for ; p < q; p++ {
					s.drop(src, p)
				}
			case errors.Is(err, unix.EFAULT):
				return false, fmt.Errorf("%s: reading pages for %#x: %w", src.name(), addr, err)
			default:
				return false, fmt.Errorf("%s: UFFDIO_COPY at %#x: %w", s.name, addr, err)
			}
		}
	}
	return false, nil
}

// fail poisons every page still needed, so that nothing reads a page it
// never got (a touch raises SIGBUS), and sends SIGBUS to the process.
func (s *lazySpace) fail(err error) {
	if s.failed.Swap(true) {
		return
	}
	s.srv.logf("%s: pages cannot be served: %v: every page not yet in is poisoned and the process gets SIGBUS", s.name, err)
	s.srv.setFailed()
	s.mu.Lock()
	if !s.closed {
		for _, r := range s.regions {
			need := s.need[r.src]
			for p := r.first; p < r.first+r.pages(); {
				if !need.test(p) {
					p++
					continue
				}
				q := p + 1
				for q < r.first+r.pages() && need.test(q) {
					q++
				}
				addr := r.start + uint64(p-r.first)*image.PageSize
				if err := uffd.Poison(s.fd, addr, uint64(q-p)*image.PageSize); err != nil && !errors.Is(err, unix.EEXIST) {
					s.srv.logf("%s: poison pages %#x+%d: %v", s.name, addr, q-p, err)
				}
				for ; p < q; p++ {
					s.drop(r.src, p)
				}
			}
		}
	}
	s.mu.Unlock()
	if s.pidfd >= 0 {
		if err := unix.PidfdSendSignal(s.pidfd, unix.SIGBUS, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
			s.srv.logf("%s: SIGBUS: %v", s.name, err)
		}
	}
	s.poke()
}

// fault serves a fault at addr: the page, if still needed, with the
// pages around it; else (already in, a hole, dropped by the program) a
// zero page where the page is missing. Threads waiting there are woken.
func (s *lazySpace) fault(addr uint64) {
	s.faults.Add(1)
	page := addr &^ (image.PageSize - 1)
	for {
		s.mu.RLock()
		src, p, ok := s.lookup(page)
		s.mu.RUnlock()
		if ok {
			if err := s.ready(src); err != nil {
				s.fail(err)
				return
			}
		}
		needed := ok && s.need[src].test(p)
		if s.failed.Load() || s.gone.Load() {
			return
		}
		if !needed {
			break
		}
		lo := max(0, p&^(faultWindow-1))
		hi := min(src.pages(), lo+faultWindow)
		if err := s.srv.load(s, src, lo, hi); err != nil {
			s.fail(err)
			return
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return
	}
	if err := uffd.ZeroPage(s.fd, page, image.PageSize); err != nil && !errors.Is(err, unix.EEXIST) && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.EAGAIN) {
		s.srv.logf("%s: zero page %#x: %v", s.name, page, err)
	}
	uffd.Wake(s.fd, page, image.PageSize)
}

// faultWindow is how many pages (aligned) a fault fills at once.
const faultWindow = 16

// apply applies one event (under the write lock).
func (s *lazySpace) apply(m uffd.Msg) {
	switch m.Event {
	case uffd.EventRemove:
		s.forget(m.Start, m.End)
	case uffd.EventUnmap:
		s.forget(m.Start, m.End)
		s.cut(m.Start, m.End)
	case uffd.EventRemap:
		s.forget(m.To, m.To+m.Len)
		s.cut(m.To, m.To+m.Len)
		s.split(m.From)
		s.split(m.From + m.Len)
		for i, r := range s.regions {
			if r.start >= m.From && r.end <= m.From+m.Len {
				s.regions[i].start = r.start - m.From + m.To
				s.regions[i].end = r.end - m.From + m.To
			}
		}
		slices.SortFunc(s.regions, func(a, b lazyRegion) int { return cmpU64(a.start, b.start) })
	case uffd.EventFork:
		s.srv.forked(s, m.FD)
	}
}

// forget drops the pages of [start, end) from what is needed: the program
// unmapped them or dropped them (MADV_DONTNEED: they read zero now).
func (s *lazySpace) forget(start, end uint64) {
	for _, r := range s.regions {
		lo, hi := max(start, r.start), min(end, r.end)
		for a := lo; a < hi; a += image.PageSize {
			s.drop(r.src, r.first+int((a-r.start)/image.PageSize))
		}
	}
}

// dropUnmapped drops needed pages that no region maps any more (none
// should be: every event that unmaps pages drops them first).
func (s *lazySpace) dropUnmapped() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, src := range s.srcs {
		mapped := newBitset(src.pages())
		for _, r := range s.regions {
			if r.src == src {
				for p := r.first; p < r.first+r.pages(); p++ {
					mapped.set(p)
				}
			}
		}
		for p := range src.pages() {
			if !mapped.test(p) && s.need[src].test(p) {
				s.drop(src, p)
			}
		}
	}
}

// split makes addr a region boundary.
func (s *lazySpace) split(addr uint64) {
	for i, r := range s.regions {
		if addr > r.start && addr < r.end {
			tail := lazyRegion{start: addr, end: r.end, src: r.src, first: r.first + int((addr-r.start)/image.PageSize)}
			s.regions[i].end = addr
			s.regions = slices.Insert(s.regions, i+1, tail)
			return
		}
	}
}

// cut removes [start, end) from the regions.
func (s *lazySpace) cut(start, end uint64) {
	s.split(start)
	s.split(end)
	s.regions = slices.DeleteFunc(s.regions, func(r lazyRegion) bool { return r.start >= start && r.end <= end })
}

// child is the space of a child forked from s: the same regions, and the
// same pages needed (the child got a copy of every page present).
func (s *lazySpace) child(fd int) *lazySpace {
	c := &lazySpace{srv: s.srv, name: "child of " + s.name, fd: fd, pidfd: -1, srcs: s.srcs,
		regions: slices.Clone(s.regions), need: map[*lazySource]bitset{}, trimmed: map[*lazySource]*sync.Once{},
		wake: make(chan struct{}, 1)}
	for src, b := range s.need {
		c.need[src] = b.clone()
		c.trimmed[src] = new(sync.Once) // trimming twice is harmless
	}
	c.left.Store(s.left.Load())
	s.srv.filling.pages.Add(c.left.Load())
	return c
}

// serve reads faults and events until every page is in or the address
// space is gone, then closes the userfaultfd.
func (s *lazySpace) serve() {
	buf := make([]byte, 64*uffd.MsgSize)
	for {
		if s.left.Load() == 0 || s.gone.Load() || s.srv.aborted.Load() {
			s.close()
			return
		}
		pfd := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
		unix.Poll(pfd, 20)
		s.mu.Lock()
		msgs, err := uffd.Read(s.fd, buf)
		var faults []uint64
		for _, m := range msgs {
			if m.Event == uffd.EventPagefault {
				faults = append(faults, m.Addr)
			} else {
				s.apply(m)
			}
		}
		s.mu.Unlock()
		if err != nil {
			s.srv.logf("%s: %v", s.name, err)
			s.gone.Store(true)
		}
		for _, a := range faults {
			go serveFault(s, a)
		}
	}
}

func (s *lazySpace) close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		s.srv.filling.pages.Add(-s.left.Load()) // never filled: the space is over
		unix.Close(s.fd)
		if s.pidfd >= 0 {
			unix.Close(s.pidfd)
		}
	}
	s.mu.Unlock()
	how := "all pages in"
	switch {
	case s.failed.Load():
		how = "failed"
	case s.gone.Load():
		how = "gone"
	case s.srv.aborted.Load():
		how = "restore aborted"
	}
	s.srv.logf("%s: %s (%d faults served), %s since restore began", s.name, how, s.faults.Load(), s.srv.since())
	s.srv.spaces.Done()
}
