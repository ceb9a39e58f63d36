package dumper

import (
	"fmt"
	"os"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/wptrack"
)

// Which pages a tracked dump reads, and which it takes from the previous
// checkpoint.

// isTracked says whether the written pages of v are known.
func (t *Tracking) isTracked(pid int, v *image.VMA) bool {
	tt := t.tasks[pid]
	if tt == nil || tt.prev == nil {
		return false
	}
	_, ok := tt.written[v]
	return ok
}

// pages lists the pages of tracked vma v to read (choose). Presence comes
// from PAGEMAP_SCAN too, as runs: reading the pagemap entry of every page
// would cost more than the copy.
func (t *Tracking) pages(pid int, v *image.VMA) ([]uint32, error) {
	pm, err := os.Open(proc.Path(pid, "pagemap"))
	if err != nil {
		return nil, fmt.Errorf("open pagemap: %w", err)
	}
	defer pm.Close()
	ret := uint64(wptrack.PagePresent | wptrack.PageSwapped | wptrack.PagePFNZero)
	if v.Kind == image.VMAFile {
		ret |= wptrack.PageFile // a page lookup each: 20x the walk, asked only here
	}
	regions, err := wptrack.Pages(int(pm.Fd()), v.Start, v.End, wptrack.PagePresent|wptrack.PageSwapped, ret)
	if err != nil {
		return nil, err
	}
	out := t.choose(t.tasks[pid], v, regions)
	t.report.PagesCopied += int64(len(out))
	return out, nil
}

// choose returns, of the pages of v that regions say are present or
// swapped, those to read: written since the last dump, or where no vma of
// the same mapping was then. Of the others, those the previous checkpoint
// saved keep its hash (tt.reused), the rest stay holes (zero, or as in
// the file). The zero page and, in a file mapping, the file's own pages
// are holes too, as in an untracked dump.
func (t *Tracking) choose(tt *taskTrack, v *image.VMA, regions []wptrack.Region) []uint32 {
	w := tt.written[v]
	fileVMA := v.Kind == image.VMAFile
	cur := prevCursor{vmas: tt.prev.VMAs, v: v, unread: t.unread}
	var out []uint32
	for _, r := range regions {
		switch {
		case r.Categories&wptrack.PagePFNZero != 0:
			continue // the zero page
		case fileVMA && r.Categories&wptrack.PageFile != 0:
			continue // as in the file: the restore maps it
		case fileVMA && r.Categories&wptrack.PagePresent == 0:
			// Swapped out, or a uffd-wp marker a zap left in a file
			// mapping (the page may be the file's again): read it.
			for a := r.Start; a < r.End; a += image.PageSize {
				out = append(out, uint32((a-v.Start)/image.PageSize))
			}
			continue
		}
		lo, hi := uint32((r.Start-v.Start)/image.PageSize), uint32((r.End-v.Start)/image.PageSize)
		for i := lo; i < hi; {
			if w[i] {
				out = append(out, i)
				i++
				continue
			}
			j := i + 1
			for j < hi && !w[j] {
				j++
			}
			// [i, j) unwritten: the previous checkpoint's pages there.
			for i < j {
				next, refs, covered := cur.refs(v.Start+uint64(i)*image.PageSize, v.Start+uint64(j)*image.PageSize)
				n := uint32((next - v.Start) / image.PageSize)
				if !covered {
					for ; i < n; i++ {
						out = append(out, i)
					}
					continue
				}
				if len(refs) > 0 {
					// A run, not a copy: nothing is allocated per page
					// while the tree is frozen (addReused joins them).
					tt.reused[v] = append(tt.reused[v], refs)
				}
				i = n
			}
		}
	}
	return out
}

// countFull is memCopier.pick for the vmas whose written pages are not
// known: all of idx is read; it only counts.
func (t *Tracking) countFull(pid int, v *image.VMA, idx []uint32) []uint32 {
	if tt := t.tasks[pid]; tt != nil && tt.prev != nil && len(idx) > 0 && trackable(v) {
		t.report.FullVMAs++ // new, moved, or not ours to track
	}
	t.report.PagesCopied += int64(len(idx))
	return idx
}

// prevCursor walks the previous checkpoint's vmas of a process along vma
// v, at ascending addresses.
type prevCursor struct {
	vmas   []*image.VMA
	v      *image.VMA
	vi, pi int
	unread map[*image.VMA]bool // previous vmas not read in full (markUnread)
}

// refs returns the previous checkpoint's pages in [addr, end) of v, up
// to next (end, or where the vma that covers addr, or the gap before the
// next one, stops), with indices of v; covered is false for a gap, a
// vma of another mapping or one a pre-copy pass could not read in full
// (then nothing is known of [addr, next)).
// Addresses must ascend from call to call.
func (c *prevCursor) refs(addr, end uint64) (next uint64, refs []image.PageRef, covered bool) {
	for c.vi < len(c.vmas) && c.vmas[c.vi].End <= addr {
		c.vi++
		c.pi = 0
	}
	if c.vi == len(c.vmas) {
		return end, nil, false
	}
	pv := c.vmas[c.vi]
	if pv.Start > addr {
		return min(end, pv.Start), nil, false
	}
	next = min(end, pv.End)
	if !sameMapping(pv, c.v) || c.unread[pv] {
		return next, nil, false
	}
	lo, hi := uint32((addr-pv.Start)/image.PageSize), uint32((next-pv.Start)/image.PageSize)
	for c.pi < len(pv.Pages) && pv.Pages[c.pi].Index < lo {
		c.pi++
	}
	k := c.pi
	for k < len(pv.Pages) && pv.Pages[k].Index < hi {
		k++
	}
	refs = pv.Pages[c.pi:k]
	c.pi = k
	if pv.Start != c.v.Start {
		// Indices of v, not of pv.
		shift := int64(pv.Start-c.v.Start) / image.PageSize
		moved := make([]image.PageRef, len(refs))
		for i, r := range refs {
			moved[i] = image.PageRef{Index: uint32(int64(r.Index) + shift), Hash: r.Hash}
		}
		refs = moved
	}
	return next, refs, true
}

// sameMapping says whether pv (previous checkpoint) and v map the same
// thing at their common addresses: kind, file and, for a file, the same
// offset at the same address.
func sameMapping(pv, v *image.VMA) bool {
	if pv.Kind != v.Kind || pv.Dev != v.Dev || pv.Inode != v.Inode || pv.Name != v.Name || pv.Shared() {
		return false
	}
	if v.Inode != 0 && int64(v.Offset)-int64(pv.Offset) != int64(v.Start)-int64(pv.Start) {
		return false
	}
	return true
}

// addReused puts the pages taken from the previous checkpoint into the
// page tables, in index order, once the copied ones are there (after the
// tree is released).
func (t *Tracking) addReused(stats *image.Stats) {
	for _, tt := range t.tasks {
		for v, runs := range tt.reused {
			refs := joinRuns(runs)
			v.Pages = mergeRefs(v.Pages, refs)
			stats.PagesTotal += int64(len(refs))
			t.report.PagesReferenced += int64(len(refs))
		}
	}
}

// joinRuns concatenates ascending runs into one new list.
func joinRuns(runs [][]image.PageRef) []image.PageRef {
	n := 0
	for _, r := range runs {
		n += len(r)
	}
	out := make([]image.PageRef, 0, n)
	for _, r := range runs {
		out = append(out, r...)
	}
	return out
}

// mergeRefs merges two page lists in ascending index order.
func mergeRefs(a, b []image.PageRef) []image.PageRef {
	if len(a) == 0 {
		return b
	}
	out := make([]image.PageRef, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].Index < b[0].Index {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}
