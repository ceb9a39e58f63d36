package restorer

import (
	"fmt"
	"io"
	"os"
	"runtime"
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
		switch v.Kind {
		case image.VMAVdso, image.VMAVvar, image.VMAVsyscall:
			continue
		}
		if v.Kind == image.VMAFile && v.Shared() || isShmem(v) {
			continue // the file or the shared memory object holds it
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

// pageScans runs scanPages for every task of a checkpoint ahead of the
// tracer, several at once: through a mount each SEEK_DATA/SEEK_HOLE is a
// FUSE round trip, and none of it needs ptrace.
type pageScans map[int]*pageScan

type pageScan struct {
	done   chan struct{}
	ranges map[*image.VMA][][2]int64
	err    error
}

const scanParallel = 8

func startPageScans(dir string, c *image.Checkpoint) pageScans {
	scans := pageScans{}
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
	return rs, nil
}

const chunkSize = 4 << 20

// useUffd selects UFFDIO_COPY for anonymous memory (else process_vm_writev).
var useUffd = os.Getenv("CKPTFS_NO_UFFD") == ""

// writers is the number of goroutines writing memory into the target:
// process_vm_writev is bound by the target's page faults (allocate, zero,
// copy), which run in parallel on different pages.
var writers = max(1, runtime.NumCPU())

type chunk struct {
	uffd   bool // fill with UFFDIO_COPY (page-aligned, registered vma)
	addr   uint64
	buf    []byte
	pooled bool // buf comes from the pool (else from a mapping of the file)
}

// fillMemory writes the saved pages of every vma into process pid with
// process_vm_writev, from several goroutines. The pages files are mapped
// into the restorer, so the kernel copies straight from their page cache
// into the target; a file that cannot be mapped is read in chunks instead.
// It returns the bytes written.
func fillMemory(pid int, dir string, t *image.Task, ranges map[*image.VMA][][2]int64, ufd int, uffd map[*image.VMA]bool) (int64, error) {
	pool := make(chan []byte, 2*writers+2)
	for i := 0; i < cap(pool); i++ {
		pool <- nil // allocated on first use
	}
	work := make(chan chunk, cap(pool))
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		errW  error
		total int64
		stop  = make(chan struct{})
	)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				mu.Lock()
				failed := errW != nil
				mu.Unlock()
				if !failed {
					var err error
					if c.uffd {
						err = inject.UffdCopy(ufd, c.addr, c.buf)
					} else {
						err = inject.WriteMem(pid, c.addr, c.buf)
					}
					mu.Lock()
					if err != nil && errW == nil {
						errW = err
						close(stop)
					}
					total += int64(len(c.buf))
					mu.Unlock()
				}
				if c.pooled {
					pool <- c.buf[:cap(c.buf)]
				}
			}
		}()
	}
	var maps [][]byte
	defer func() {
		for _, m := range maps {
			unix.Munmap(m)
		}
	}()
	readErr := func() error {
		defer close(work)
		for _, v := range t.VMAs {
			rs := ranges[v]
			if len(rs) == 0 {
				continue
			}
			path := image.PagesPath(dir, t.PID, v)
			f, err := image.OpenTreeFile(path)
			if err != nil {
				return err
			}
			m, merr := unix.Mmap(int(f.Fd()), 0, int(v.Len()), unix.PROT_READ, unix.MAP_SHARED)
			if merr == nil {
				maps = append(maps, m)
			}
			for _, r := range rs {
				for off := r[0]; off < r[1]; {
					n := min(r[1]-off, chunkSize)
					c := chunk{addr: v.Start + uint64(off), uffd: uffd[v] && useUffd}
					if merr == nil {
						c.buf = m[off : off+n]
						select {
						case <-stop:
							f.Close()
							return nil
						default:
						}
					} else {
						select {
						case c.buf = <-pool:
						case <-stop:
							f.Close()
							return nil
						}
						if c.buf == nil {
							c.buf = make([]byte, chunkSize)
						}
						c.pooled = true
						c.buf = c.buf[:n]
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
