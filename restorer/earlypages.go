package restorer

import (
	"slices"
	"sync"

	"github.com/ckptfs/ckptfs/image"
)

// Early page reads. From a mount of a local store the checkpoint comes
// from the store's server (storemodel.go) and so do the pages of its
// small tasks (pagesource.go), read ahead by the page scans. The scans
// start once the model is rendered and loaded; the page tables that say
// which pages a task needs are in from the server's Load on, before that.
// earlyPages starts reading the small tasks' pages then, so that the
// server reads them while the client renders and loads the model, and
// the scans take what was read instead of asking again. A task's early
// pages are used only if they are exactly the pages its scan asks for
// (the same hashes in the same order); otherwise, and for every task not
// read early (over prefetchMax, or past the budget), the scans read as
// before.

// earlyPages are the pages read ahead for each task, by pid.
type earlyPages struct {
	mu    sync.Mutex
	tasks map[int]*earlyTask
	pf    *prefetch
	used  int // tasks whose scans took their early pages
}

type earlyTask struct {
	done   chan struct{}
	hashes []image.Hash // in the order fetchTask would read them
	data   []byte
	n      int64 // bytes of the prefetch budget it holds
	err    error
	taken  bool
}

// startEarlyPages reads, scanParallel tasks at a time in the
// checkpoint's order, the pages fillMemory takes from the store for every
// task of sc (the store's checkpoint with its page tables) small enough
// for the read-ahead and within pf's budget.
//
// The buffers are cut from arena (may be nil) while it lasts.
func startEarlyPages(sp *storePages, sc *image.Checkpoint, pf *prefetch, arena *earlyArena) *earlyPages {
	e := &earlyPages{tasks: map[int]*earlyTask{}, pf: pf}
	var jobs []*earlyTask
	for _, t := range sc.Tasks {
		if t.State == "Z" {
			continue
		}
		var hashes []image.Hash
		for _, v := range t.VMAs {
			if !filledVMA(v) {
				continue
			}
			for _, r := range v.Pages {
				hashes = append(hashes, r.Hash)
			}
		}
		n := int64(len(hashes)) * image.PageSize
		if n == 0 || !pf.take(n) {
			continue
		}
		et := &earlyTask{done: make(chan struct{}), hashes: hashes, n: n}
		e.tasks[t.PID] = et
		jobs = append(jobs, et)
	}
	go func() {
		sem := make(chan struct{}, scanParallel)
		for _, et := range jobs {
			sem <- struct{}{}
			et.data = arena.cut(et.n)
			go func() {
				defer func() { <-sem; close(et.done) }()
				et.err = sp.readHashes(et.hashes, et.data)
			}()
		}
	}()
	return e
}

// take returns the pages of task t read early, if they are the pages refs
// (t's vmas read from the store) name in t's vma order, split by vma, and
// a release that gives their budget back once they are written; ok is
// false if there are none (then the caller reads them itself). It waits
// for the task's read if it is still going on.
func (e *earlyPages) take(t *image.Task, refs map[*image.VMA][]image.PageRef) (data map[*image.VMA][]byte, release func(), ok bool) {
	if e == nil {
		return nil, nil, false
	}
	e.mu.Lock()
	et := e.tasks[t.PID]
	if et != nil {
		if et.taken {
			et = nil
		}
		if et != nil {
			et.taken = true
		}
	}
	e.mu.Unlock()
	if et == nil {
		return nil, nil, false
	}
	<-et.done
	give := func() { e.pf.give(et.n) }
	var want []image.Hash
	var order []*image.VMA
	for _, v := range t.VMAs {
		if rs := refs[v]; rs != nil {
			order = append(order, v)
			for _, r := range rs {
				want = append(want, r.Hash)
			}
		}
	}
	if et.err != nil || !slices.Equal(want, et.hashes) {
		et.data = nil
		give()
		return nil, nil, false
	}
	buf := et.data
	et.data = nil
	e.mu.Lock()
	e.used++
	e.mu.Unlock()
	data = make(map[*image.VMA][]byte, len(order))
	for _, v := range order {
		k := int64(len(refs[v])) * image.PageSize
		data[v], buf = buf[:k:k], buf[k:]
	}
	return data, give, true
}

// counts says how many tasks were read early and how many scans took
// what was read.
func (e *earlyPages) counts() (read, used int) {
	if e == nil {
		return 0, 0
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.tasks), e.used
}

// drop gives back the budget of every task not taken (once its read is
// done), when the restore no longer needs them.
func (e *earlyPages) drop() {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, et := range e.tasks {
		if !et.taken {
			et.taken = true
			go func() {
				<-et.done
				et.data = nil
				e.pf.give(et.n)
			}()
		}
	}
}

// earlyCounts is counts of s's early pages (none without a store).
func (s *storePages) earlyCounts() (read, used int) {
	if s == nil {
		return 0, 0
	}
	return s.early.counts()
}

// earlyArena is one buffer for the early reads, allocated and faulted in
// while the server loads the checkpoint: the restorer waits for the
// server's answer then, and a first touch of fresh memory costs (on this
// kind of VM some 3 µs a page, 80 ms for 100 MiB) where nothing waits
// for it. Its size comes from the info file's counts, before the page
// tables are in; the early reads cut their buffers from it in order, and
// make their own once it is used up. It may be larger than what they
// take (pages of tasks too big to read early, at most prefetchBudget):
// then some memory was touched for nothing, on a core that was idle.
type earlyArena struct {
	done chan struct{}
	buf  []byte
	off  int64
}

// arenaMin is the smallest arena worth a goroutine.
const arenaMin = 4 << 20

// startEarlyArena starts faulting in an arena for the pages of a
// checkpoint of tasks tasks and pages saved pages, or returns nil when
// its tasks are too big to be read early on average or it would be small.
func startEarlyArena(tasks, pages int64) *earlyArena {
	if tasks <= 0 || pages <= 0 || pages/tasks*image.PageSize > prefetchMax {
		return nil
	}
	n := min(pages*image.PageSize, prefetchBudget)
	if n < arenaMin {
		return nil
	}
	a := &earlyArena{done: make(chan struct{})}
	go func() {
		defer close(a.done)
		b := make([]byte, n)
		for i := 0; i < len(b); i += image.PageSize {
			b[i] = 0 // a write: the kernel maps the page now
		}
		a.buf = b
	}()
	return a
}

// cut returns n bytes of the arena once it is faulted in, or a new
// buffer when there is no arena or too little of it left. Not safe for
// concurrent use.
func (a *earlyArena) cut(n int64) []byte {
	if a == nil {
		return make([]byte, n)
	}
	<-a.done
	if a.off+n > int64(len(a.buf)) {
		return make([]byte, n)
	}
	b := a.buf[a.off : a.off+n : a.off+n]
	a.off += n
	return b
}
