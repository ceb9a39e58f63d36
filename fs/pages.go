package fs

import (
	"fmt"
	"sort"

	"github.com/ckptfs/ckptfs/image"
)

// pageBatcher is a page source that reads many pages in one call
// (dedup.Store.ReadPages, dedup.Client.ReadPages): a store reads runs of
// pages faster than one page at a time.
type pageBatcher interface {
	ReadPages(hashes []image.Hash, dst []byte) error
}

// readPagesBatched serves a read of a vma's pages file whose offset and
// length are whole pages (the kernel's page cache reads, readahead) with
// one ReadPages call per run of saved pages; holes are zeros. ok is false
// when the read is not page aligned or the source cannot batch: the caller
// then reads with ReadAt.
func readPagesBatched(p *image.PagesFile, dest []byte, off int64) (n int, ok bool, err error) {
	src, batch := p.Src.(pageBatcher)
	if !batch || off%image.PageSize != 0 {
		return 0, false, nil
	}
	size := int64(p.VMA.Len())
	if off >= size {
		return 0, true, nil
	}
	dest = dest[:min(int64(len(dest)), size-off)]
	if len(dest)%image.PageSize != 0 {
		return 0, false, nil
	}
	pages := p.VMA.Pages
	first := uint32(off / image.PageSize)
	end := first + uint32(len(dest)/image.PageSize)
	i := sort.Search(len(pages), func(i int) bool { return pages[i].Index >= first })
	next := first // pages of dest before next are filled
	hashes := make([]image.Hash, 0, len(dest)/image.PageSize)
	for i < len(pages) && pages[i].Index < end {
		// A run of saved pages with consecutive indexes.
		start := pages[i].Index
		hashes = hashes[:0]
		for i < len(pages) && pages[i].Index < end && pages[i].Index == start+uint32(len(hashes)) {
			hashes = append(hashes, pages[i].Hash)
			i++
		}
		lo := int64(start-first) * image.PageSize
		hi := lo + int64(len(hashes))*image.PageSize
		clear(dest[int64(next-first)*image.PageSize : lo])
		if err := src.ReadPages(hashes, dest[lo:hi]); err != nil {
			return 0, true, fmt.Errorf("vma %s pages %d-%d: %w", p.VMA.DirName(), start, start+uint32(len(hashes))-1, err)
		}
		next = start + uint32(len(hashes))
	}
	clear(dest[int64(next-first)*image.PageSize:])
	return len(dest), true, nil
}
