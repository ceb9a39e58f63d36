package dumper

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/directio"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/sparse"
)

// DefaultMemoryBudget is Options.MemoryBudget when it is 0. Pages beyond
// it go to the spill file, which takes them nearly as fast as chunk
// buffers do (a write into the page cache; spillFile.prefault has the
// figures), so a small budget costs little freeze.
const DefaultMemoryBudget = 256 << 20

// chunkPages is how many pages one read and one store batch carry.
const chunkPages = 256

// streamChunkPages is chunkPages in a pre-copy pass (stream): there the
// tree runs, so a chunk is as long as keeps the syscalls and hand-offs
// per byte few (one process_vm_readv, one store batch and one pwritev a
// chunk) without a task's copy going to one thread (the pass copies
// trees of 8 MiB a process or more). 1 GiB, this machine, same run:
// CPU 1.07-1.39 s against 1.18-1.63 s with chunkPages.
const streamChunkPages = 1024

// chunk is a batch of up to chunkPages pages read out of the frozen tree.
// Pages of several vmas and processes share a chunk, so a tree of many
// small processes fills few buffers.
type chunk struct {
	runs   []pageRun // where the pages of data belong, in read order
	n      int       // pages in the chunk
	data   []byte    // n pages; nil while the chunk is spilled
	spill  int64     // offset of the pages in the spill file, if spilled
	mapped bool      // data is the spill file's pages, mapped (mapBack)
	seq    int       // its place in read order (memCopier.chunks)
	hashes []image.Hash
	zero   []bool
	// pieces (a pre-copy pass's, stream) are what the chunk holds of
	// which plans, hashed by the copy (fillChunk): no runs, hashes, zero.
	pieces []piece
	stored chan struct{} // closed once a worker is done with it
}

// pageRun names saved pages: n pages of a vma from index first on. A
// chunk lists its pages as runs, not one by one, so that the chunks
// waiting in the spill file hold a few bytes each, not 16 a page.
type pageRun struct {
	vma      *image.VMA
	first, n uint32
}

// addPages appends pages idx (ascending) of v to the chunk's list.
func (c *chunk) addPages(v *image.VMA, idx []uint32) {
	for _, i := range idx {
		if l := len(c.runs) - 1; l >= 0 && c.runs[l].vma == v && c.runs[l].first+c.runs[l].n == i {
			c.runs[l].n++
		} else {
			c.runs = append(c.runs, pageRun{v, i, 1})
		}
	}
	c.n += len(idx)
}

// each calls f for every page of the chunk, in order: its position in
// the chunk, vma and index.
func (c *chunk) each(f func(i int, v *image.VMA, idx uint32)) {
	i := 0
	for _, r := range c.runs {
		for k := uint32(0); k < r.n; k++ {
			f(i, r.vma, r.first+k)
			i++
		}
	}
}

// memCopier copies pages out of frozen processes (the reader, on the ptrace
// thread); once the tree is released, workers hash them and store the new
// ones. While frozen nothing is hashed: the first MemoryBudget bytes stay
// in memory, the rest go to a spill file (spill.go), so the freeze lasts
// as long as the copy alone and the dumper's memory stays within the
// budget whatever the size of the tree.
type memCopier struct {
	repo     dedup.Repo
	opts     Options
	progress func(done, total int64)

	queue  chan *chunk // to the workers, fed by feed after the copy
	cur    *chunk      // the chunk being filled
	chunks []*chunk    // every chunk in read order, to build page tables
	// plans (a pre-copy pass's, stream) have the page tables (plan.refs)
	plans   []*plan
	nChunks int // chunks started
	// tables streams the page tables to the store as chunks are stored
	// (tabulate), where the repo takes them (nil: wait builds VMA.Pages).
	tables   *dedup.TableBuilder
	maxInMem int           // the budget, in chunks: the first ones stay in memory
	spill    *spillStripes // the chunks beyond the budget (nil: none yet)
	wg       sync.WaitGroup
	closed   bool
	started  bool

	errOnce sync.Once
	err     error
	failed  atomic.Bool
	dead    chan struct{} // closed on failure
	stored  atomic.Int64
	added   atomic.Int64
	newPg   atomic.Int64
	storedB atomic.Int64 // page bytes hashed and stored, for OnProgress
	read    atomic.Int64 // page bytes laid out over chunks (copyfill.go)
	copied  atomic.Int64 // of them, read so far
	total   int64
	stats   image.Stats
	bufs    bufferPool

	// objectRead holds, per shared memory object ("dev:inode"), the page
	// offsets already read from it: a page mapped by several processes is
	// copied once.
	objectRead map[string]map[int64]bool

	// Tracked dumps (track*.go): tracked says a vma's written pages are
	// known, trackedPages lists the pages of it to read (the rest is taken
	// from the previous checkpoint); pick sees the pages of every other
	// private vma and returns those to read.
	pick         func(pid int, v *image.VMA, idx []uint32) []uint32
	tracked      func(pid int, v *image.VMA) bool
	trackedPages func(pid int, v *image.VMA) ([]uint32, error)

	// A pre-copy pass (stream, set before the copy): the tree runs, so
	// the workers hash and store while the copy goes on, and the copy
	// threads wait for the buffers they give back (slots) rather than
	// spill: no spill file, no prefault, at most the budget in flight.
	// skip says the next dump reads a vma in full whatever this pass
	// copies of it (not armed, shared): it is not copied; unread records
	// such a vma, and one a copy could not read (copyfill.go).
	stream bool
	chunkN int // pages a chunk holds: chunkPages, or streamChunkPages
	slots  chan struct{}
	skip   func(pid int, v *image.VMA) bool
	unread func(v *image.VMA)
}

func newMemCopier(repo dedup.Repo, opts Options, progress func(done, total int64)) *memCopier {
	m := &memCopier{repo: repo, opts: opts, progress: progress,
		maxInMem: max(int(opts.MemoryBudget/(chunkPages*image.PageSize)), 1), dead: make(chan struct{}), chunkN: chunkPages,
		queue: make(chan *chunk, 2*runtime.NumCPU())}
	return m
}

// streamBuffers is how many chunk buffers a pre-copy pass has in flight
// at most (within the budget): one for every copy thread and worker. The
// copy threads hash what they read (fillChunk), so a worker holds its
// buffer only while the store writes it: more buffers would only queue
// for the disk, and be memory the copy faults in once (a fresh buffer
// costs a page fault a page; one given back costs none). 1 GiB, this
// machine, 8 alternating runs: 6 buffers against 12, same wall and dump
// CPU, an untracked second dump 0.82 s CPU against 0.87 s, 17 MiB less
// RSS.
func (m *memCopier) streamBuffers() int {
	budget := max(int(m.opts.MemoryBudget/int64(m.chunkN*image.PageSize)), 1)
	return min(budget, copyWorkers()+streamWorkers())
}

// streamWorkers is how many workers hash and store in a pre-copy pass:
// two a CPU, so that while one waits for the store's write of its pages
// (a pack written through O_DIRECT waits for the disk) another hashes
// (1 GiB, this machine: pass 1.6 s against 2.1 s with one a CPU).
func streamWorkers() int { return 2 * runtime.NumCPU() }

// startStream makes the copier a pre-copy pass's (stream): the workers
// start now and store chunks as the copy threads finish them.
func (m *memCopier) startStream() {
	m.stream = true
	if m.opts.MemoryBudget >= 16*streamChunkPages*image.PageSize {
		// else a small budget keeps small chunks, to hold more of them
		m.chunkN, m.bufs.pages = streamChunkPages, streamChunkPages
		m.bufs.huge = true
	}
	n := m.streamBuffers()
	m.slots = make(chan struct{}, n)
	for range n {
		m.slots <- struct{}{}
	}
	m.startWorkers()
}

// startWorkers starts the feeder and the hashing and storing workers. They
// are held back while the tree is frozen, so the copy has the CPUs to
// itself. A pre-copy pass (stream) has no feeder: finishChunk queues each
// chunk once it is read.
func (m *memCopier) startWorkers() {
	if m.started {
		return
	}
	m.started = true
	if m.stream {
		for range streamWorkers() {
			m.wg.Add(1)
			go m.worker()
		}
		return
	}
	// A tracked dump merges the references it copied with those it takes
	// from the previous checkpoint (addReused) once all are known: it
	// builds VMA.Pages.
	if tw, ok := m.repo.(dedup.TableWriter); ok && m.tracked == nil && m.pick == nil {
		m.tables = dedup.NewTableBuilder(tw)
		m.wg.Add(1)
		go m.tabulate()
	}
	m.wg.Add(1)
	go m.feed()
	for i := 0; i < runtime.NumCPU(); i++ {
		m.wg.Add(1)
		go m.worker()
	}
}

// feed hands every chunk to the workers in read order: the chunks in
// memory first, then the spilled ones, mapped from the spill file (not
// read back into buffers: no copy). Once the chunks in memory are handed
// on, no buffer is needed again: the pool lets go of them (the workers
// drop theirs as they finish), so the budget's memory is given back while
// the rest of the dump (the spilled chunks, page tables, commit) runs.
func (m *memCopier) feed() {
	defer m.wg.Done()
	defer close(m.queue)
	defer m.bufs.drain()
	for _, c := range m.chunks {
		if m.failed.Load() {
			return
		}
		if c.data == nil {
			m.bufs.drain()
			data, err := m.spill.mapBack(c.spill, c.n*image.PageSize)
			if err != nil {
				m.fail(err)
				return
			}
			c.data, c.mapped = data, true
		}
		m.queue <- c
	}
}

func (m *memCopier) fail(err error) {
	m.errOnce.Do(func() {
		m.err = err
		m.failed.Store(true)
		close(m.dead)
	})
}

func (m *memCopier) worker() {
	defer m.wg.Done()
	var sc storeScratch
	for c := range m.queue {
		if !m.failed.Load() {
			if err := m.store(c, &sc); err != nil {
				m.fail(err)
			}
			clear(sc.pages)     // no hold on the buffer given back
			m.reportStored(c.n) // progress.go
		}
		if c.mapped {
			m.spill.release(c.data, c.spill)
		} else if c.data != nil {
			m.bufs.put(c.data[:cap(c.data)])
			if m.stream {
				m.slots <- struct{}{}
			}
		}
		c.data, c.mapped = nil, false
		close(c.stored)
	}
}

// tabulate puts the references of the stored chunks, in read order, in
// the page tables it streams to the store (m.tables), and drops each
// chunk's lists once done: what the dump holds per page is the chunks
// in the workers' hands, not the whole checkpoint's references.
func (m *memCopier) tabulate() {
	defer m.wg.Done()
	for _, c := range m.chunks {
		select {
		case <-c.stored:
		case <-m.dead: // the chunks not handed to a worker never will be
			return
		}
		if m.failed.Load() {
			return
		}
		var err error
		c.each(func(i int, v *image.VMA, idx uint32) {
			m.stats.PagesTotal++
			if c.zero[i] {
				m.stats.PagesZero++
			} else if err == nil {
				err = m.tables.Add(v, image.PageRef{Index: idx, Hash: c.hashes[i]})
			}
		})
		c.runs, c.hashes, c.zero = nil, nil, nil
		if err != nil {
			m.fail(err)
			return
		}
	}
	if err := m.tables.Finish(); err != nil {
		m.fail(err)
	}
}

// storeScratch is what a worker lists a chunk's pages in (and hashes
// them with, after a frozen copy), kept from chunk to chunk.
type storeScratch struct {
	pages  [][]byte
	hashes []image.Hash
	hs     hashScratch
}

// store hashes a chunk (unless the copy did: stream) and puts the pages
// the store lacks.
func (m *memCopier) store(c *chunk, sc *storeScratch) error {
	n := c.n
	pages, hashes := sc.pages[:0], sc.hashes[:0]
	if m.stream {
		for _, pc := range c.pieces {
			for k := range pc.idx {
				if !pc.p.zero[pc.pos+k] {
					pages = append(pages, c.data[(pc.at+k)*image.PageSize:(pc.at+k+1)*image.PageSize])
					hashes = append(hashes, pc.p.refs[pc.pos+k].Hash)
				}
			}
		}
		c.pieces = nil
	} else {
		c.hashes = make([]image.Hash, n)
		c.zero = make([]bool, n)
		sc.hs.sum(c.data, c.zero, func(k int, h image.Hash) { c.hashes[k] = h })
		for i := 0; i < n; i++ {
			if !c.zero[i] {
				pages = append(pages, c.data[i*image.PageSize:(i+1)*image.PageSize])
				hashes = append(hashes, c.hashes[i])
			}
		}
	}
	sc.pages, sc.hashes = pages, hashes
	if len(pages) == 0 {
		return nil
	}
	k := len(hashes)
	if _, local := m.repo.(*dedup.Store); !local {
		// A local store's PutPages skips the pages it has at the cost of
		// Missing's look-up: asking first would look each page up twice.
		missing, err := m.repo.Missing(hashes)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		k = 0
		for i, miss := range missing {
			if miss {
				hashes[k], pages[k] = hashes[i], pages[i]
				k++
			}
		}
	}
	if k > 0 {
		added, err := m.repo.PutPages(hashes[:k], pages[:k])
		if err != nil {
			return fmt.Errorf("store pages: %w", err)
		}
		// Another worker may have stored some of them meanwhile: count
		// what this call really added.
		m.added.Add(added)
		m.newPg.Add(added / image.PageSize)
	}
	if s := m.stored.Add(int64(len(hashes))); m.opts.FailAfterPages > 0 && s >= m.opts.FailAfterPages {
		return errors.New("injected failure after storing pages")
	}
	return nil
}

// wantPage says whether a page with pagemap entry e of vma v must be saved.
func wantPage(v *image.VMA, e uint64) bool {
	if e&(proc.PMPresent|proc.PMSwapped) == 0 {
		return false
	}
	if v.Kind == image.VMAFile && !v.Shared() {
		// Private file mapping: only pages that differ from the file
		// (anonymous copies) are saved; the rest comes from the file.
		return e&proc.PMFileShared == 0
	}
	return true
}

// saveContents says whether a vma's pages are saved at all.
func saveContents(v *image.VMA) bool {
	switch v.Kind {
	case image.VMAVvar, image.VMAVsyscall:
		return false // kernel data, not readable
	case image.VMAVdso:
		return true // two pages, for debuggers (core files); restore uses its own
	case image.VMAFile:
		return !v.Shared() // shared file mappings live in the file
	}
	return true
}

// copyTask reads the saved pages of every vma of pid and queues them.
func (m *memCopier) copyTask(pid int, t *image.Task) error {
	pm, err := proc.OpenPagemap(pid)
	if err != nil {
		return err
	}
	defer pm.Close()
	mem, err := os.Open(proc.Path(pid, "mem"))
	if err != nil {
		return fmt.Errorf("open memory of %d: %w", pid, err)
	}
	defer mem.Close()
	var plans []plan
	defer func() {
		for _, p := range plans {
			if p.object != nil {
				p.object.Close()
			}
		}
	}()
	var entries []uint64
	canScan := true
	for _, v := range t.VMAs {
		if !saveContents(v) {
			continue
		}
		var idx []uint32
		var object *os.File
		if m.skip != nil && m.skip(pid, v) {
			m.unread(v)
			continue
		}
		if v.SharedAnon() {
			if object, idx, err = objectPages(pid, v); err != nil {
				return fmt.Errorf("process %d vma %s: %w", pid, v.DirName(), err)
			}
			idx = m.firstReads(v, idx)
		} else if m.tracked != nil && m.tracked(pid, v) {
			// trackpages.go: the written pages, from PAGEMAP_SCAN
			if idx, err = m.trackedPages(pid, v); err != nil {
				return fmt.Errorf("process %d vma %s: %w", pid, v.DirName(), err)
			}
		} else {
			scanned := false
			if scansPresence(v) && canScan {
				if idx, scanned, err = presentPages(pm, v); err != nil {
					return fmt.Errorf("process %d vma %s: %w", pid, v.DirName(), err)
				}
				canScan = scanned // no PAGEMAP_SCAN: pagemap for the rest
			}
			if !scanned {
				if entries, err = pm.Entries(v.Start, v.End, entries); err != nil {
					return fmt.Errorf("process %d vma %s: %w", pid, v.DirName(), err)
				}
				for i, e := range entries {
					if wantPage(v, e) {
						idx = append(idx, uint32(i))
					}
				}
			}
			if m.pick != nil {
				idx = m.pick(pid, v, idx)
			}
		}
		if len(idx) > 0 {
			plans = append(plans, plan{v: v, idx: idx, object: object})
			m.total += int64(len(idx)) * image.PageSize
		} else if object != nil {
			object.Close()
		}
	}
	return m.copyPlans(pid, mem, plans)
}

// flush ends the chunk being filled, once the copy is over.
func (m *memCopier) flush() {
	c := m.cur
	if c == nil || c.n == 0 {
		return
	}
	m.cur = nil
	if err := m.finishChunk(c); err != nil {
		m.fail(err)
	}
}

// finishChunk ends a chunk read in full: within the budget it stays in
// memory, beyond it its pages go to the spill file and its buffer back to
// the pool; in a pre-copy pass (stream) it goes to the workers. Several
// threads end chunks at once.
func (m *memCopier) finishChunk(c *chunk) error {
	c.data = c.data[:c.n*image.PageSize]
	if m.stream {
		select {
		case m.queue <- c:
			return nil
		case <-m.dead:
			return m.err
		}
	}
	if c.seq < m.maxInMem {
		return nil
	}
	return m.spillChunk(c)
}

// spillChunk writes c's pages to the spill file and frees its buffer.
// Every chunk but the last is full, so the n-th chunk past the budget has
// its place in the file at n chunks.
func (m *memCopier) spillChunk(c *chunk) error {
	off := int64(c.seq-m.maxInMem) * chunkPages * image.PageSize
	if err := m.spill.writeAt(c.data, off); err != nil {
		return err
	}
	c.spill = off
	m.bufs.put(c.data[:cap(c.data)])
	c.data = nil
	return nil
}

// readPages reads the given pages of v into buf: one process_vm_readv with
// an iovec per run of adjacent pages, /proc/<pid>/mem for what that cannot
// read (pages without read permission).
func readPages(pid int, mem *os.File, v *image.VMA, indices []uint32, buf []byte) error {
	type run struct{ first, n int }
	var runs []run
	for i, idx := range indices {
		if l := len(runs); l > 0 && indices[runs[l-1].first]+uint32(runs[l-1].n) == idx {
			runs[l-1].n++
			continue
		}
		runs = append(runs, run{i, 1})
	}
	if v.Prot()&unix.PROT_READ != 0 {
		remote := make([]unix.RemoteIovec, len(runs))
		for i, r := range runs {
			remote[i] = unix.RemoteIovec{Base: uintptr(v.Start) + uintptr(indices[r.first])*image.PageSize, Len: r.n * image.PageSize}
		}
		local := []unix.Iovec{{Base: &buf[0]}}
		local[0].SetLen(len(buf))
		if n, err := unix.ProcessVMReadv(pid, local, remote, 0); err == nil && n == len(buf) {
			return nil
		}
	}
	for _, r := range runs {
		off := int64(v.Start) + int64(indices[r.first])*image.PageSize
		dst := buf[r.first*image.PageSize : (r.first+r.n)*image.PageSize]
		if _, err := mem.ReadAt(dst, off); err != nil {
			return fmt.Errorf("read %#x: %w", off, err)
		}
	}
	return nil
}

// closeReads ends the reading phase: no more chunks will come.
func (m *memCopier) closeReads() error {
	if !m.closed {
		m.closed = true
		if !m.failed.Load() {
			m.flush()
		}
		if m.stream {
			// Chunks not handed on (a failure) never will be: the
			// workers see the queue end.
			close(m.queue)
		}
	}
	m.startWorkers()
	if m.failed.Load() {
		return m.err
	}
	return nil
}

// wait waits for the workers and fills in the page tables and stats.
func (m *memCopier) wait() error {
	m.closeReads()
	m.wg.Wait()
	m.closeSpill()
	if m.stream {
		m.bufs.drain()
	}
	if m.err != nil {
		return m.err
	}
	m.stats.PagesNew = m.newPg.Load()
	m.stats.BytesAdded = m.added.Load()
	if m.stream {
		m.streamTables()
		return nil
	}
	if m.tables != nil {
		m.chunks = nil
		m.stats.PagesTotal -= m.stats.PagesZero // tabulate counted them
		return nil
	}
	// The chunk buffers are garbage now: return them to the system
	// before the page tables are built (issue 17: the dumper's peak
	// memory is the budget plus a bounded part, not both at once).
	debug.FreeOSMemory()
	// Each vma's table is allocated once at its size, and each chunk's
	// lists are dropped once copied, so the per-page data is not held
	// twice over (a table grown by append would be, up to 2x more).
	count := map[*image.VMA]int{}
	for _, c := range m.chunks {
		c.each(func(i int, v *image.VMA, _ uint32) {
			if !c.zero[i] {
				count[v]++
			}
		})
	}
	for v, n := range count {
		v.Pages = slices.Grow(v.Pages, n)
	}
	for k, c := range m.chunks {
		c.each(func(i int, v *image.VMA, idx uint32) {
			m.stats.PagesTotal++
			if c.zero[i] {
				m.stats.PagesZero++
				return
			}
			v.Pages = append(v.Pages, image.PageRef{Index: idx, Hash: c.hashes[i]})
		})
		m.chunks[k] = nil
	}
	m.chunks = nil
	m.stats.PagesTotal -= m.stats.PagesZero
	return nil
}

// streamTables makes the references of a pre-copy pass's plans (copied
// and hashed: wait) the page tables of their vmas, zero pages dropped.
// The chunk buffers are unmapped already (or, not huge, within the
// budget) and the tables are built in place: nothing to give back first.
func (m *memCopier) streamTables() {
	for _, p := range m.plans {
		k := 0
		for i := range p.refs {
			if !p.zero[i] {
				p.refs[k] = p.refs[i]
				k++
			}
		}
		m.stats.PagesTotal += int64(k)
		m.stats.PagesZero += int64(len(p.refs) - k)
		if len(p.v.Pages) == 0 {
			p.v.Pages = p.refs[:k]
		} else {
			p.v.Pages = append(p.v.Pages, p.refs[:k]...)
		}
		p.refs, p.zero = nil, nil
	}
	m.plans, m.chunks = nil, nil
}

// stop ends the copier's workers. After wait returned (success) they are
// gone already and it does nothing; after a failure it makes them give up
// what they were doing.
func (m *memCopier) stop() {
	m.fail(errors.New("dump aborted"))
	m.closeReads()
	m.wg.Wait()
	m.closeSpill()
	m.bufs.drain()
}

// closeSpill removes the spill file (it has no name: closing frees it).
func (m *memCopier) closeSpill() {
	if m.spill != nil {
		m.spill.close()
		m.spill = nil
	}
}

// bufferPool holds chunk buffers. Buffers are allocated and touched before
// the tree is frozen (prefault), so the copy while frozen does not pay the
// page faults of fresh memory.
type bufferPool struct {
	mu      sync.Mutex
	free    [][]byte
	drained bool // the copy is over: buffers put back are dropped
	pages   int  // pages a buffer holds (0: chunkPages); set before use
	// huge (set before use) makes the pool map its buffers on their own,
	// in transparent huge pages where the kernel has them (a pre-copy
	// pass's): the O_DIRECT write of a chunk then pins two folios, not
	// a thousand pages, and the copy into it misses the TLB less.
	// Mapped buffers are unmapped once dropped (mapped: by first byte).
	huge   bool
	mapped map[*byte]bool
}

func newChunkBuffer(pages int) []byte {
	b := make([]byte, pages*image.PageSize)
	for i := 0; i < len(b); i += image.PageSize {
		b[i] = 0 // fault the page in now
	}
	return b
}

// prefault readies, before the tree is frozen, the memory a copy of about
// want bytes will write into: chunk buffers up to the budget, so the copy
// into them while frozen pays no page faults, and beyond it the spill
// file's blocks (spillFile.prefault).
func (m *memCopier) prefault(want int64) error {
	chunkBytes := int64(chunkPages * image.PageSize)
	n := int(min(want, int64(m.maxInMem)*chunkBytes) / chunkBytes)
	over := want - int64(m.maxInMem)*chunkBytes
	if over > 0 {
		// the buffers the readers spill from (copyfill.go)
		n += copyWorkers() + 1
	}
	m.bufs.prefault(n)
	if over > 0 {
		s, err := newSpillStripes(os.TempDir(), copyWorkers())
		if err != nil {
			return err
		}
		m.spill = s
		return s.prefault(over + spillSlack)
	}
	return nil
}

// spillSlack is what the spill file reserves beyond the estimate:
// the tree may grow a little between the estimate and the freeze.
const spillSlack = 64 << 20

// prefault makes sure n buffers are ready. They are faulted in on every
// CPU at once: fresh memory is dear on this kind of VM (a 101-process
// tree of 1 MiB each wants 110 buffers, 85 ms on one CPU).
func (p *bufferPool) prefault(n int) {
	p.mu.Lock()
	need, pages := n-len(p.free), p.size()
	p.mu.Unlock()
	if need <= 0 {
		return
	}
	bufs := make([][]byte, need)
	workers := min(runtime.NumCPU(), need)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < need; i += workers {
				bufs[i] = newChunkBuffer(pages)
			}
		})
	}
	wg.Wait()
	p.mu.Lock()
	p.free = append(p.free, bufs...)
	p.mu.Unlock()
}

// drain drops the free buffers, and every buffer put back from now on.
func (p *bufferPool) drain() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.free {
		p.dropLocked(b)
	}
	clear(p.free)
	p.free, p.drained = nil, true
}

// dropLocked lets go of buffer b, no longer used: a mapped one is
// unmapped, the rest left to the garbage collector. p.mu is held.
func (p *bufferPool) dropLocked(b []byte) {
	if len(b) > 0 && p.mapped[&b[0]] {
		delete(p.mapped, &b[0])
		_ = directio.FreeHuge(b) // fails only for a bad slice: none here
	}
}

func (p *bufferPool) get() []byte {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return b
	}
	huge := p.huge
	p.mu.Unlock()
	if huge {
		// Aligned to huge pages; a size that is not a multiple of them
		// is refused, and that buffer is an ordinary one.
		if b, err := directio.HugeBuffer(p.size() * image.PageSize); err == nil {
			p.mu.Lock()
			if p.mapped == nil {
				p.mapped = map[*byte]bool{}
			}
			p.mapped[&b[0]] = true
			p.mu.Unlock()
			return b
		}
	}
	return newChunkBuffer(p.size())
}

// size is the pages of a buffer of the pool.
func (p *bufferPool) size() int {
	if p.pages > 0 {
		return p.pages
	}
	return chunkPages
}

func (p *bufferPool) put(b []byte) {
	p.mu.Lock()
	if !p.drained {
		p.free = append(p.free, b)
	} else {
		p.dropLocked(b)
	}
	p.mu.Unlock()
}

// anonBytes estimates the memory a dump of the tree will copy: the
// anonymous memory of its processes (smaps_rollup), read before the seize.
func anonBytes(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := proc.Read(pid, "smaps_rollup")
		if err != nil {
			continue
		}
		kv := proc.KeyValues(b)
		// Pss_Shmem: shared memory counts once over the processes that
		// map it, as it is copied once (objectPages).
		for _, k := range []string{"Anonymous", "Pss_Shmem", "SwapPss"} {
			var kib int64
			fmt.Sscanf(kv[k], "%d", &kib)
			total += kib << 10
		}
	}
	return total
}

// objectPages opens the shared memory object v maps (map_files) and lists
// the pages of v that the object holds (SEEK_DATA/SEEK_HOLE): also those no
// page table maps, such as pages a process dropped with MADV_DONTNEED, or
// swapped out. Reading them from the object leaves the process's page
// tables as they are.
func objectPages(pid int, v *image.VMA) (*os.File, []uint32, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, v.Start, v.End))
	if err != nil {
		return nil, nil, fmt.Errorf("shared memory object: %w", err)
	}
	var idx []uint32
	start, end := int64(v.Offset), int64(v.Offset)+int64(v.Len())
	for e, err := range sparse.Data(int(f.Fd()), start, end) {
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("shared memory object: %w", err)
		}
		for p := e.Start &^ (image.PageSize - 1); p < e.End; p += image.PageSize {
			idx = append(idx, uint32((p-start)/image.PageSize))
		}
	}
	return f, idx, nil
}

// firstReads drops from idx (pages of shared vma v) those another vma of
// the same object had already read, and records the rest.
func (m *memCopier) firstReads(v *image.VMA, idx []uint32) []uint32 {
	if m.objectRead == nil {
		m.objectRead = map[string]map[int64]bool{}
	}
	key := fmt.Sprintf("%s:%d", v.Dev, v.Inode)
	seen := m.objectRead[key]
	if seen == nil {
		seen = map[int64]bool{}
		m.objectRead[key] = seen
	}
	out := idx[:0]
	for _, i := range idx {
		off := int64(v.Offset) + int64(i)*image.PageSize
		if !seen[off] {
			seen[off] = true
			out = append(out, i)
		}
	}
	return out
}

// readObjectPages reads the given pages of v from the shared memory object
// it maps, one read per run of adjacent pages.
func readObjectPages(object *os.File, v *image.VMA, indices []uint32, buf []byte) error {
	for i := 0; i < len(indices); {
		n := 1
		for i+n < len(indices) && indices[i+n] == indices[i]+uint32(n) {
			n++
		}
		off := int64(v.Offset) + int64(indices[i])*image.PageSize
		if _, err := object.ReadAt(buf[i*image.PageSize:(i+n)*image.PageSize], off); err != nil {
			return fmt.Errorf("read shared memory at %#x: %w", off, err)
		}
		i += n
	}
	return nil
}
