package dedup

import (
	"fmt"
	"runtime"
	"sort"
	"sync"

	"github.com/ckptfs/ckptfs/image"
)

// maxRun is the most bytes ReadPages reads with one pread. ReadPagesDirect
// reads runs read in place with up to maxColdRun: an O_DIRECT read into
// huge pages is one request to the disk, and bigger requests read a
// virtual disk faster.
const (
	maxRun     = 1 << 20
	maxColdRun = 4 << 20
)

// ReadPages fills dst (len(hashes)*PageSize bytes) with the pages hashes
// name, in order, each checked against its hash as ReadPage does. The
// pages are looked up in the page index and read pack by pack in
// offset order, pages adjacent in a pack with one pread (a vma dumped in
// one go lies in order in its packs), straight into dst when they are raw
// pages dst wants one after another; the hashes are checked on all
// cores. A page that fails is read again alone by ReadPage (gc may have
// moved it), whose error is returned.
func (s *Store) ReadPages(hashes []image.Hash, dst []byte) error {
	return s.readPages(hashes, dst, false)
}

// ReadPagesDirect is ReadPages for a reader that reads a range of pages
// once, in big batches (the mount's read-ahead): a run of raw pages that
// dst wants one after another, at a page-aligned address of dst, and that
// is mostly not in the page cache is read with O_DIRECT, straight from
// the disk into dst, without filling the page cache with the pack (and
// copying from it). Every page is checked against its hash as ReadPages
// does, but by the calling goroutine alone: such a reader calls it from
// several goroutines at once.
func (s *Store) ReadPagesDirect(hashes []image.Hash, dst []byte) error {
	return s.readPages(hashes, dst, true)
}

func (s *Store) readPages(hashes []image.Hash, dst []byte, cold bool) error {
	if len(dst) != len(hashes)*image.PageSize {
		return fmt.Errorf("read pages: buffer of %d bytes for %d pages", len(dst), len(hashes))
	}
	locs, err := s.locateAll(hashes)
	if err != nil {
		return err
	}
	bad := readLocated(s.packs, locs, dst, cold)
	if cold {
		checkHashesOn(1, hashes, dst, bad)
	} else {
		checkHashes(hashes, dst, bad)
	}
	for i, b := range bad {
		if b {
			if err := s.ReadPage(hashes[i], dst[i*image.PageSize:(i+1)*image.PageSize]); err != nil {
				return err
			}
		}
	}
	return nil
}

// readLocated reads the blobs locs name from the packs of pf into dst
// (one page each, in order): pack by pack in offset order, blobs adjacent
// in a pack with one pread, straight into dst when they are raw pages dst
// wants one after another. It returns which pages could not be read or
// decoded; it does not check hashes. cold reads runs of raw pages
// (wherever dst wants them) with one packFiles.readvCold each, of up to
// maxColdRun bytes: O_DIRECT where it can, straight into dst.
func readLocated(pf *packFiles, locs []packLoc, dst []byte, cold bool) []bool {
	order := make([]int, len(locs))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool {
		la, lb := locs[order[a]], locs[order[b]]
		if la.pack != lb.pack {
			return la.pack < lb.pack
		}
		return la.offset < lb.offset
	})
	bad := make([]bool, len(locs))
	var scratch *[]byte
	defer func() {
		if scratch != nil {
			runScratch.Put(scratch)
		}
	}()
	isRaw := func(l packLoc) bool { return l.flags&blobS2 == 0 && l.length == image.PageSize }
	for start := 0; start < len(order); {
		// A run: blobs of one pack, each starting where the last ended.
		first := locs[order[start]]
		end, size := start+1, int64(first.length)
		// raw: every blob of the run is a raw page; direct: and they
		// fill consecutive pages of dst, so the run is read in place.
		raw := isRaw(first)
		direct := raw
		for end < len(order) {
			l := locs[order[end]]
			if l.pack != first.pack || l.offset != first.offset+size {
				break
			}
			r := raw && isRaw(l)
			d := direct && r && order[end] == order[end-1]+1
			if n := size + int64(l.length); n > maxRun && !(cold && r && n <= maxColdRun) {
				break
			}
			raw, direct = r, d
			size += int64(l.length)
			end++
		}
		if cold && raw {
			if err := pf.readvCold(first.pack, pageVecs(dst, order[start:end]), first.offset); err != nil {
				for _, i := range order[start:end] {
					bad[i] = true
				}
			}
			start = end
			continue
		}
		if direct {
			i0 := order[start]
			run := dst[i0*image.PageSize : i0*image.PageSize+int(size)]
			if err := pf.readAt(first.pack, run, first.offset); err != nil {
				for _, i := range order[start:end] {
					bad[i] = true
				}
			}
			start = end
			continue
		}
		if scratch == nil {
			scratch = runScratch.Get().(*[]byte)
		}
		run := (*scratch)[:size]
		if err := pf.readAt(first.pack, run, first.offset); err != nil {
			for _, i := range order[start:end] {
				bad[i] = true
			}
		} else {
			off := int64(0)
			for _, i := range order[start:end] {
				l := locs[i]
				page := dst[i*image.PageSize : (i+1)*image.PageSize]
				if decodeBlob(run[off:off+int64(l.length)], l.flags, page) != nil {
					bad[i] = true
				}
				off += int64(l.length)
			}
		}
		start = end
	}
	return bad
}

// pageVecs returns the pages idx of dst, in that order, pages that
// follow each other in dst merged into one slice.
func pageVecs(dst []byte, idx []int) [][]byte {
	var vecs [][]byte
	for k := 0; k < len(idx); {
		j := k + 1
		for j < len(idx) && idx[j] == idx[j-1]+1 {
			j++
		}
		vecs = append(vecs, dst[idx[k]*image.PageSize:(idx[j-1]+1)*image.PageSize])
		k = j
	}
	return vecs
}

// runScratch holds the buffers of runs that cannot be read in place
// (compressed blobs, pages asked for out of pack order).
var runScratch = sync.Pool{New: func() any { b := make([]byte, maxRun); return &b }}

// checkHashes marks bad every page of dst that does not hash to its hash,
// on all cores.
func checkHashes(hashes []image.Hash, dst []byte, bad []bool) {
	checkHashesOn(runtime.NumCPU(), hashes, dst, bad)
}

// checkHashesOn is checkHashes with at most workers goroutines. With one
// it yields the processor after every batch of 64 pages: a reader ahead
// (the mount's read-ahead, whose chunks are hashed while the FUSE
// requests before them are answered) keeps the requests' goroutines
// from waiting behind its hashing.
func checkHashesOn(workers int, hashes []image.Hash, dst []byte, bad []bool) {
	workers = min(workers, (len(hashes)+63)/64)
	check := func(from, to int) {
		const batch = 64
		var pages [batch][]byte
		var got [batch]image.Hash
		for i := from; i < to; i += batch {
			n := min(batch, to-i)
			for k := range n {
				pages[k] = dst[(i+k)*image.PageSize : (i+k+1)*image.PageSize]
			}
			SumPages(pages[:n], got[:n])
			for k := range n {
				bad[i+k] = bad[i+k] || got[k] != hashes[i+k]
			}
			if workers <= 1 {
				runtime.Gosched()
			}
		}
	}
	if workers <= 1 {
		check(0, len(hashes))
		return
	}
	var wg sync.WaitGroup
	per := (len(hashes) + workers - 1) / workers
	for from := 0; from < len(hashes); from += per {
		wg.Go(func() { check(from, min(from+per, len(hashes))) })
	}
	wg.Wait()
}

// locateAll returns where each of hashes is stored (the page index).
func (s *Store) locateAll(hashes []image.Hash) ([]packLoc, error) {
	locs := make([]packLoc, len(hashes))
	x, err := s.pages()
	if err != nil {
		return nil, err
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	for i, h := range hashes {
		l, ok := x.find(h)
		if !ok || l.pack == 0 {
			return nil, fmt.Errorf("page %s: %w", h, ErrPageMissing)
		}
		locs[i] = l
	}
	return locs, nil
}

// LoadIndex builds the in-memory page index now (it is otherwise built by
// the first page read or write): a mount calls it in the background, so
// that a restore right after mounting does not wait for it (some 100 ms a
// GiB of pages, cold). An error is returned again by the first read.
func (s *Store) LoadIndex() error {
	_, err := s.pages()
	return err
}
