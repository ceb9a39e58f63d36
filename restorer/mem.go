package restorer

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/sparse"
)

// scanPages finds the data ranges (SEEK_DATA/SEEK_HOLE) of every vma's
// pages file. VMAs without saved pages get no entry.
func scanPages(dir string, t *image.Task) (map[*image.VMA][][2]int64, error) {
	out := map[*image.VMA][][2]int64{}
	for _, v := range t.VMAs {
		if !filledVMA(v) {
			continue
		}
		path := image.PagesPath(dir, t.PID, v)
		rs, err := dataRanges(path, int64(v.Len()))
		if err != nil {
			return nil, err
		}
		if len(rs) > 0 {
			out[v] = rs
		}
	}
	return out, nil
}

// filledVMA says whether fillMemory writes v from its pages file: not the
// vdso unit, not shared file mappings (the file holds their contents),
// not shared memory (shmem.go fills the object once).
func filledVMA(v *image.VMA) bool {
	switch v.Kind {
	case image.VMAVdso, image.VMAVvar, image.VMAVsyscall:
		return false
	}
	return !(v.Kind == image.VMAFile && v.Shared() || isShmem(v))
}

// pageScans runs scanPages for every task of a checkpoint ahead of the
// tracer, several at once: through a mount each SEEK_DATA/SEEK_HOLE is a
// FUSE round trip, and none of it needs ptrace.
type pageScans map[int]*pageScan

type pageScan struct {
	done    chan struct{}
	ranges  map[*image.VMA][][2]int64
	refs    map[*image.VMA][]image.PageRef // vmas read from the store (pagesource.go)
	data    map[*image.VMA][]byte          // their pages, read ahead (small tasks)
	release func()                         // gives data's bytes back to the prefetch budget
	// checks are the pagemap entries of the vmas whose pages fillMemory
	// checks as it writes them (set by verifyPages before any process
	// is created, verify.go).
	checks map[*image.VMA][]image.PageRef
	err    error
}

const scanParallel = 8

// With a store source sp, the ranges come from the pagemaps and the data
// from the store (scanStorePages).
func startPageScans(dir string, c *image.Checkpoint, sp *storePages) pageScans {
	scans := pageScans{}
	pf := &prefetch{left: prefetchBudget}
	if sp != nil {
		pf = sp.pf // shared with the early reads
	}
	sem := make(chan struct{}, scanParallel)
	for _, t := range c.Tasks {
		if t.State == "Z" {
			continue
		}
		s := &pageScan{done: make(chan struct{})}
		scans[t.PID] = s
		go func() {
			sem <- struct{}{}
			defer func() { <-sem; close(s.done) }()
			if sp != nil {
				s.ranges, s.refs, s.err = scanStorePages(dir, t, sp.tree)
				var n int64
				for _, rs := range s.refs {
					n += int64(len(rs)) * image.PageSize
				}
				if s.err != nil || n == 0 {
					return
				}
				if data, release, ok := sp.early.take(t, s.refs); ok { // earlypages.go
					s.data, s.release = data, release
					return
				}
				if pf.take(n) {
					s.release = func() { pf.give(n) }
					s.data, s.err = sp.fetchTask(t, s.refs, n)
				}
				return
			}
			s.ranges, s.err = scanPages(dir, t)
		}()
	}
	return scans
}

// get waits for the scan of task pid.
func (s pageScans) get(pid int) (map[*image.VMA][][2]int64, error) {
	sc := s[pid]
	if sc == nil {
		return nil, fmt.Errorf("task %d: no page scan", pid)
	}
	<-sc.done
	return sc.ranges, sc.err
}

// storeRefs returns, once the scan of task pid is done, the pages of the
// vmas whose data comes from the store (nil: all from the files).
func (s pageScans) storeRefs(pid int) map[*image.VMA][]image.PageRef {
	sc := s[pid]
	if sc == nil {
		return nil
	}
	<-sc.done
	return sc.refs
}

// deferredChecks returns the vmas of task pid whose pages fillMemory
// checks (nil: none; verifyPages has returned).
func (s pageScans) deferredChecks(pid int) map[*image.VMA][]image.PageRef {
	if sc := s[pid]; sc != nil {
		return sc.checks
	}
	return nil
}

// takeData returns the pages of task pid read ahead (nil if none) and
// forgets them: the caller writes them once.
func (s pageScans) takeData(pid int) (map[*image.VMA][]byte, func()) {
	sc := s[pid]
	if sc == nil {
		return nil, func() {}
	}
	<-sc.done
	data, release := sc.data, sc.release
	sc.data, sc.release = nil, nil
	if release == nil {
		release = func() {}
	}
	return data, release
}

func dataRanges(path string, size int64) ([][2]int64, error) {
	f, err := image.OpenTreeFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("checkpoint file %s: %w", path, err)
	}
	if st.Size() != size {
		return nil, fmt.Errorf("checkpoint file %s: %d bytes, want %d (the vma's length)", path, st.Size(), size)
	}
	var rs [][2]int64
	for e, err := range sparse.Data(int(f.Fd()), 0, size) {
		if err != nil {
			return nil, fmt.Errorf("checkpoint file %s: %w", path, err)
		}
		rs = append(rs, [2]int64{e.Start &^ (image.PageSize - 1), e.End})
	}
	readEarly(f, rs) // directread.go
	return rs, nil
}

const chunkSize = 4 << 20

// useUffd selects UFFDIO_COPY for anonymous memory (else process_vm_writev).
var useUffd = os.Getenv("CKPTFS_NO_UFFD") == ""

// writers is the number of goroutines writing memory into the target:
// process_vm_writev is bound by the target's page faults (allocate, zero,
// copy), which run in parallel on different pages.
var writers = max(1, runtime.NumCPU())

// storeWorkers is the number of goroutines that read from the store and
// write: more than the CPUs, so the store's server always has batches to
// read and check while the writers copy.
const storeWorkers = 4

type chunk struct {
	uffd   bool // fill with UFFDIO_COPY (page-aligned, registered vma)
	addr   uint64
	buf    []byte
	pooled bool            // buf comes from the pool (else from a mapping of the file)
	refs   []image.PageRef // read these pages from the store into buf first
	file   *directFile     // else read buf from this pages file at off first
	direct bool            // buf comes from the direct reads' pool
	off    int64
	check  *chunkCheck // check buf against its pagemap entries first
}

// chunkCheck is what checkChunk needs to check a chunk of a vma.
type chunkCheck struct {
	v    *image.VMA
	off  int64 // of the chunk in the vma
	refs []image.PageRef
}

// write reads c from the store if it says so, checks it if it says so,
// then writes it into process pid (or through ufd).
func (c chunk) write(pid, ufd int, sf *storeFill) error {
	if c.refs != nil {
		if err := sf.src.read(c.refs, c.buf); err != nil {
			return fmt.Errorf("memory at %#x: %w", c.addr, err)
		}
	}
	if c.file != nil {
		if err := c.file.readAt(c.buf, c.off); err != nil {
			return err
		}
	}
	if k := c.check; k != nil {
		if err := checkChunk(k.v, k.off, c.buf, k.refs); err != nil {
			return err
		}
	}
	if c.uffd {
		return inject.UffdCopy(ufd, c.addr, c.buf)
	}
	return inject.WriteMem(pid, c.addr, c.buf)
}

// storeFill is where fillMemory reads the vmas of refs: the store, or
// data, their pages read ahead. checks are the vmas of the tree's files
// whose pages fillMemory checks before it writes them (their pagemap
// entries: pageScans.deferredChecks).
type storeFill struct {
	src    *storePages
	refs   map[*image.VMA][]image.PageRef
	data   map[*image.VMA][]byte
	checks map[*image.VMA][]image.PageRef
}

// fillMemory writes the saved pages of every vma into process pid with
// process_vm_writev, from several goroutines. The pages files are mapped
// into the restorer, so the kernel copies straight from their page cache
// into the target; a file that cannot be mapped is read in chunks instead.
// A big pages file that is not in the page cache is read with O_DIRECT
// instead (directread.go). The vmas of sf (may be nil) are read from the store instead, in
// batches of chunkSize by several goroutines. It returns the bytes written.
func fillMemory(pid int, dir string, t *image.Task, ranges map[*image.VMA][][2]int64, ufd int, uffd map[*image.VMA]bool, sf *storeFill) (int64, error) {
	workers := writers
	if sf != nil && (len(sf.refs) > 0 || len(sf.checks) > 0) {
		workers = max(workers, storeWorkers)
	}
	pool := make(chan []byte, 2*workers+2)
	for i := 0; i < cap(pool); i++ {
		pool <- nil // allocated on first use
	}
	// dpool has the buffers of the direct reads (directread.go).
	dpool := make(chan []byte, directInFlight+2*storeWorkers+2)
	for i := 0; i < cap(dpool); i++ {
		dpool <- nil
	}
	var bufs chunkBufs
	defer bufs.free()
	work := make(chan chunk, cap(pool))
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		errW  error
		total int64
		stop  = make(chan struct{})
	)
	worker := func() {
		defer wg.Done()
		// A checked chunk of a mapped pages file that fails to read
		// is a SIGBUS, made a panic that checkChunk recovers.
		debug.SetPanicOnFault(true)
		for c := range work {
			mu.Lock()
			failed := errW != nil
			mu.Unlock()
			if !failed {
				err := c.write(pid, ufd, sf)
				mu.Lock()
				if err != nil && errW == nil {
					errW = err
					close(stop)
				}
				total += int64(len(c.buf))
				addProgress(t, int64(len(c.buf))) // progress.go
				mu.Unlock()
			}
			switch {
			case c.direct:
				dpool <- c.buf[:cap(c.buf)]
			case c.pooled:
				pool <- c.buf[:cap(c.buf)]
			}
		}
	}
	wg.Add(workers)
	for range workers {
		go worker()
	}
	var maps [][]byte
	var direct []*directFile
	defer func() {
		for _, m := range maps {
			unix.Munmap(m)
		}
		for _, d := range direct {
			d.close()
		}
	}()
	// The direct reads are made by readers of their own, directInFlight
	// at a time, which hand each chunk read on to the workers: the disk
	// always has reads queued, while storeWorkers workers hash and write.
	// They start with the first file read directly.
	readq := make(chan chunk)
	var senders sync.WaitGroup
	reader := func() {
		defer senders.Done()
		for c := range readq {
			mu.Lock()
			failed := errW != nil
			mu.Unlock()
			if !failed {
				if err := c.file.readAt(c.buf, c.off); err != nil {
					mu.Lock()
					if errW == nil {
						errW = err
						close(stop)
					}
					mu.Unlock()
				}
			}
			c.file = nil
			work <- c // the workers skip it once failed
		}
	}
	startDirect := sync.OnceFunc(func() {
		if n := storeWorkers - workers; n > 0 {
			wg.Add(n)
			for range n {
				go worker()
			}
		}
		senders.Add(directInFlight)
		for range directInFlight {
			go reader()
		}
	})
	readErr := func() error {
		defer func() {
			close(readq)
			senders.Wait()
			close(work)
		}()
		for _, v := range t.VMAs {
			rs := ranges[v]
			if len(rs) == 0 {
				continue
			}
			if sf != nil && sf.data[v] != nil {
				if !queueDataChunks(v, rs, sf.data[v], uffd[v] && useUffd, work, stop) {
					return nil
				}
				continue
			}
			if sf != nil && sf.refs[v] != nil {
				sf.src.prefetch(sf.refs[v])
				if !queueStoreChunks(v, rs, sf.refs[v], uffd[v] && useUffd, pool, &bufs, work, stop) {
					return nil
				}
				continue
			}
			path := image.PagesPath(dir, t.PID, v)
			f, err := image.OpenTreeFile(path)
			if err != nil {
				return err
			}
			var checkRefs []image.PageRef
			if sf != nil {
				checkRefs = sf.checks[v]
			}
			if d := openDirect(f, path, rs); d != nil {
				direct = append(direct, d)
				startDirect()
				if !queueDirectChunks(v, rs, d, sf != nil && sf.checks[v] != nil, checkRefs, uffd[v] && useUffd, dpool, &bufs, readq, stop) {
					return nil
				}
				continue
			}
			m, merr := unix.Mmap(int(f.Fd()), 0, int(v.Len()), unix.PROT_READ, unix.MAP_SHARED)
			if merr == nil {
				maps = append(maps, m)
			}
			ra := mappedReadahead{m: m}
			for _, r := range rs {
				for off := r[0]; off < r[1]; {
					n := min(r[1]-off, chunkSize)
					c := chunk{addr: v.Start + uint64(off), uffd: uffd[v] && useUffd}
					if sf != nil && sf.checks[v] != nil {
						c.check = &chunkCheck{v: v, off: off, refs: refsIn(checkRefs, off, off+n)}
					}
					if merr == nil {
						c.buf = m[off : off+n]
						ra.upTo(off, min(off+fillAhead, r[1]))
						select {
						case <-stop:
							f.Close()
							return nil
						default:
						}
					} else {
						var ok bool
						if c.buf, ok = bufs.take(pool, stop, n); !ok {
							f.Close()
							return nil
						}
						c.pooled = true
						if _, err := f.ReadAt(c.buf, off); err != nil && err != io.EOF {
							f.Close()
							return fmt.Errorf("checkpoint file %s: %w", path, err)
						}
					}
					work <- c
					off += n
				}
			}
			f.Close()
		}
		return nil
	}()
	wg.Wait()
	if readErr != nil {
		return total, readErr
	}
	return total, errW
}

// refsIn returns the entries of refs (ascending) for the pages in the
// byte range [lo, hi) of their vma.
func refsIn(refs []image.PageRef, lo, hi int64) []image.PageRef {
	i := sort.Search(len(refs), func(i int) bool { return int64(refs[i].Index)*image.PageSize >= lo })
	j := sort.Search(len(refs), func(i int) bool { return int64(refs[i].Index)*image.PageSize >= hi })
	return refs[i:j]
}

// fillAhead is how far ahead of the chunk being queued fillMemory asks
// the kernel to read a mapped pages file: bounded, so that what is read
// ahead is still in the page cache when the writers get to it.
const fillAhead = 64 << 20

// mappedReadahead asks the kernel to read a mapped pages file ahead of the
// writers (MADV_WILLNEED, readaheadStep at a time): without it each page
// fault of a check or of process_vm_writev on a file not in the page
// cache waits for a read of 128 KiB.
type mappedReadahead struct {
	m    []byte // nil: not mapped
	done int64  // asked for up to here
}

// upTo asks for the bytes of [from, to) not asked for yet.
func (ra *mappedReadahead) upTo(from, to int64) {
	if ra.m == nil {
		return
	}
	ra.done = max(ra.done, from)
	for ra.done < to {
		end := min(ra.done+readaheadStep, to)
		unix.Madvise(ra.m[ra.done:end], unix.MADV_WILLNEED)
		ra.done = end
	}
}

// queueStoreChunks queues the ranges rs of vma v, whose pages refs lists
// (rs are their runs: refRanges), as chunks the workers read from the
// store. It returns false if the fill was stopped.
func queueStoreChunks(v *image.VMA, rs [][2]int64, refs []image.PageRef, uffd bool, pool chan []byte, bufs *chunkBufs, work chan<- chunk, stop <-chan struct{}) bool {
	j := 0
	for _, r := range rs {
		for off := r[0]; off < r[1]; {
			n := min(r[1]-off, chunkSize)
			c := chunk{addr: v.Start + uint64(off), uffd: uffd, pooled: true}
			var ok bool
			if c.buf, ok = bufs.take(pool, stop, n); !ok {
				return false
			}
			k := j + int(n/image.PageSize)
			c.refs = refs[j:k]
			j = k
			work <- c
			off += n
		}
	}
	return true
}

// queueDataChunks queues the ranges rs of vma v from data, its pages read
// ahead one after another (in the order of rs). It returns false if the
// fill was stopped.
func queueDataChunks(v *image.VMA, rs [][2]int64, data []byte, uffd bool, work chan<- chunk, stop <-chan struct{}) bool {
	for _, r := range rs {
		for off := r[0]; off < r[1]; {
			n := min(r[1]-off, chunkSize)
			select {
			case work <- chunk{addr: v.Start + uint64(off), uffd: uffd, buf: data[:n]}:
			case <-stop:
				return false
			}
			data = data[n:]
			off += n
		}
	}
	return true
}
