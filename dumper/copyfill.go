package dumper

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/testhold"
)

// How a task's pages are read out of the frozen tree: copyTask lists the
// pages of each vma to save (a plan), assign lays them out over chunks in
// read order, on the ptrace thread, and then every CPU reads chunks at
// once (process_vm_readv needs no ptrace request, only the right to
// trace, so any thread may issue it): the copy while frozen runs at the
// speed of all cores, not one. The layout is fixed before the reads, so
// the chunks, and the page tables built from them, are in the same order
// whichever thread read what.

// plan is what copyTask saves of one vma: the page indices to read, and
// for shared anonymous memory the object to read them from.
//
// In a pre-copy pass (stream) the copy threads hash what they read into
// the plan's refs (the page table of its vma, page for page of idx) and
// mark zero pages in zero; wait drops the zero pages from refs, in place,
// and makes the rest the vma's Pages: the references are written once,
// not per chunk and then again into the table.
type plan struct {
	v      *image.VMA
	idx    []uint32
	object *os.File // shared anonymous memory: read from the object
	refs   []image.PageRef
	zero   []bool
}

// piece is a run of a plan's pages, read into a chunk at page at; pos is
// the place of its first page in the plan (p.idx, p.refs).
type piece struct {
	p   *plan
	idx []uint32
	at  int
	pos int
}

// fill is what one task reads into one chunk; full says the chunk is
// complete once it is read (the last one may be continued by the next
// task, or ended by closeReads).
type fill struct {
	c      *chunk
	pieces []piece
	full   bool
}

// copyWorkers is how many threads read chunks at once.
func copyWorkers() int { return min(runtime.GOMAXPROCS(0), 8) }

// newChunk starts the next chunk in read order. Its buffer is taken by
// whichever thread reads into it first.
func (m *memCopier) newChunk() (*chunk, error) {
	c := &chunk{seq: m.nChunks, stored: make(chan struct{})}
	m.nChunks++
	if m.stream {
		// no spill, and the page tables are built from the plans
		return c, nil
	}
	m.chunks = append(m.chunks, c)
	if c.seq >= m.maxInMem && m.spill == nil {
		s, err := newSpillStripes(os.TempDir(), copyWorkers())
		if err != nil {
			return nil, err
		}
		m.spill = s
	}
	return c, nil
}

// assign lays the plans' pages out over chunks, continuing the chunk the
// previous task left open, and returns what to read into each.
func (m *memCopier) assign(plans []plan) ([]*fill, error) {
	var fills []*fill
	for k := range plans {
		p := &plans[k]
		if m.stream {
			p.refs, p.zero = make([]image.PageRef, len(p.idx)), make([]bool, len(p.idx))
			m.plans = append(m.plans, p)
		}
		for idx, pos := p.idx, 0; len(idx) > 0; {
			if m.cur == nil {
				c, err := m.newChunk()
				if err != nil {
					return nil, err
				}
				m.cur = c
			}
			c := m.cur
			if l := len(fills); l == 0 || fills[l-1].c != c {
				fills = append(fills, &fill{c: c})
			}
			f := fills[len(fills)-1]
			n := min(len(idx), m.chunkN-c.n)
			pc := piece{p: p, idx: idx[:n], at: c.n, pos: pos}
			f.pieces = append(f.pieces, pc)
			if m.stream {
				c.pieces = append(c.pieces, pc) // for the worker (store)
				c.n += n
			} else {
				c.addPages(p.v, idx[:n])
			}
			idx, pos = idx[n:], pos+n
			m.read.Add(int64(n) * image.PageSize)
			if c.n == m.chunkN {
				f.full = true
				m.cur = nil
			}
		}
	}
	return fills, nil
}

// copyPlans reads the plans' pages of pid into chunks, on copyWorkers
// threads, the calling one among them.
func (m *memCopier) copyPlans(pid int, mem *os.File, plans []plan) error {
	fills, err := m.assign(plans)
	if err != nil {
		return err
	}
	var next atomic.Int64
	read := func() {
		var sc hashScratch
		for !m.failed.Load() {
			i := int(next.Add(1) - 1)
			if i >= len(fills) {
				return
			}
			if err := m.fillChunk(pid, mem, fills[i], &sc); err != nil {
				m.fail(err)
				return
			}
			testhold.At("copy")
		}
	}
	var wg sync.WaitGroup
	for range min(copyWorkers(), len(fills)) - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				// as Dump does for the ptrace thread: an error, not a
				// crash that would leave the tree to the kernel
				if r := recover(); r != nil {
					m.fail(fmt.Errorf("copy of %d: internal error: %v", pid, r))
				}
			}()
			read()
		}()
	}
	read()
	wg.Wait()
	if m.failed.Load() {
		return m.err
	}
	m.progress(m.read.Load(), m.total)
	return nil
}

// fillChunk reads f's pieces into its chunk and, if that completes it,
// ends it (finishChunk). In a pre-copy pass (stream) it also hashes the
// pages, hashStep at a time right after each read, while they are still
// in the cache: the workers only put them (mem.go store).
func (m *memCopier) fillChunk(pid int, mem *os.File, f *fill, sc *hashScratch) error {
	c := f.c
	if c.data == nil {
		if m.stream {
			// Wait for a buffer a worker gives back: the copy goes no
			// further ahead of the store than the budget.
			select {
			case <-m.slots:
			case <-m.dead:
				return m.err
			}
		}
		c.data = m.bufs.get()
	}
	pages := 0
	for _, pc := range f.pieces {
		step := len(pc.idx)
		if m.stream {
			step = hashStep
		}
		for s := 0; s < len(pc.idx); s += step {
			idx := pc.idx[s:min(s+step, len(pc.idx))]
			at := pc.at + s
			buf := c.data[at*image.PageSize : (at+len(idx))*image.PageSize]
			var err error
			if pc.p.object != nil {
				err = readObjectPages(pc.p.object, pc.p.v, idx, buf)
			} else {
				err = readPages(pid, mem, pc.p.v, idx, buf)
			}
			if err != nil && m.stream && m.unread != nil {
				// The tree runs: the vma may have been unmapped or
				// changed since it was collected. The next dump reads it
				// (markUnread); what this pass has of it is zeros, never
				// used.
				m.unread(pc.p.v)
				clear(c.data[pc.at*image.PageSize : (pc.at+len(pc.idx))*image.PageSize])
				for i := pc.pos; i < pc.pos+len(pc.idx); i++ {
					pc.p.zero[i] = true
				}
				break
			}
			if err != nil {
				return fmt.Errorf("read memory of %d at vma %s: %w", pid, pc.p.v.DirName(), err)
			}
			if m.stream {
				sc.hash(buf, idx, pc.p.refs[pc.pos+s:], pc.p.zero[pc.pos+s:])
			}
		}
		pages += len(pc.idx)
	}
	if done := m.copied.Add(int64(pages) * image.PageSize); c.seq%progressEvery == 0 {
		m.progress(done, m.total)
	}
	if f.full {
		return m.finishChunk(c)
	}
	return nil
}

// hashStep is how many pages a copy thread of a pre-copy pass reads at a
// time before it hashes them: 256 KiB, hashed while in the L2 cache.
const hashStep = 64

// hashScratch is what a copy thread (or a worker of a frozen copy)
// hashes with, kept from chunk to chunk.
type hashScratch struct {
	pages  [][]byte
	at     []int
	hashes []image.Hash
}

// sum hashes the pages of buf: it marks page k zero[k] if it is all
// zeros, and else calls set(k, its hash). The pages that are not zero
// are hashed together (dedup.SumPages hashes 16 at a time).
func (sc *hashScratch) sum(buf []byte, zero []bool, set func(k int, h image.Hash)) {
	sc.pages, sc.at = sc.pages[:0], sc.at[:0]
	for k := range zero {
		p := buf[k*image.PageSize : (k+1)*image.PageSize]
		if dedup.IsZero(p) {
			zero[k] = true
			continue
		}
		sc.pages, sc.at = append(sc.pages, p), append(sc.at, k)
	}
	if len(sc.pages) == 0 {
		return
	}
	sc.hashes = slices.Grow(sc.hashes[:0], len(sc.pages))[:len(sc.pages)]
	dedup.SumPages(sc.pages, sc.hashes)
	for j, k := range sc.at {
		set(k, sc.hashes[j])
	}
	clear(sc.pages) // no hold on the buffer once given back
}

// hash sets the references (refs) of the pages idx read into buf, or
// marks them zero.
func (sc *hashScratch) hash(buf []byte, idx []uint32, refs []image.PageRef, zero []bool) {
	sc.sum(buf, zero[:len(idx)], func(k int, h image.Hash) {
		refs[k] = image.PageRef{Index: idx[k], Hash: h}
	})
}

// progressEvery: copy progress is told once per that many chunks.
const progressEvery = 64
