package dumper

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"sort"

	"github.com/ckptfs/ckptfs/dedup"
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
				next, run, covered := cur.span(v.Start+uint64(i)*image.PageSize, v.Start+uint64(j)*image.PageSize)
				n := uint32((next - v.Start) / image.PageSize)
				if !covered {
					for ; i < n; i++ {
						out = append(out, i)
					}
					continue
				}
				if run.pv != nil || len(run.refs) > 0 {
					// A run, not a copy: nothing is allocated per page
					// while the tree is frozen (addReused joins them).
					tt.reused[v] = append(tt.reused[v], run)
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

// span returns the run of the previous checkpoint's pages in [addr, end)
// of v, up to next (end, or where the vma that covers addr, or the gap
// before the next one, stops); covered is false for a gap, a vma of
// another mapping or one a pre-copy pass could not read in full (then
// nothing is known of [addr, next)). The run is a slice of the previous
// vma's references, with indices of v, or, if its table is in the store
// (VMA.Table: not loaded), that vma and the addresses: addReused reads
// what it needs of it once the tree runs again.
// Addresses must ascend from call to call.
func (c *prevCursor) span(addr, end uint64) (next uint64, run reuseRun, covered bool) {
	for c.vi < len(c.vmas) && c.vmas[c.vi].End <= addr {
		c.vi++
		c.pi = 0
	}
	if c.vi == len(c.vmas) {
		return end, run, false
	}
	pv := c.vmas[c.vi]
	if pv.Start > addr {
		return min(end, pv.Start), run, false
	}
	next = min(end, pv.End)
	if !sameMapping(pv, c.v) || c.unread[pv] {
		return next, run, false
	}
	if stored(pv) {
		return next, reuseRun{pv: pv, from: addr, to: next}, true
	}
	lo, hi := uint32((addr-pv.Start)/image.PageSize), uint32((next-pv.Start)/image.PageSize)
	for c.pi < len(pv.Pages) && pv.Pages[c.pi].Index < lo {
		c.pi++
	}
	k := c.pi
	for k < len(pv.Pages) && pv.Pages[k].Index < hi {
		k++
	}
	refs := pv.Pages[c.pi:k]
	c.pi = k
	if pv.Start != c.v.Start {
		refs = shiftRefs(refs, pv, c.v)
	}
	return next, reuseRun{refs: refs}, true
}

// shiftRefs returns refs of pv with indices of v.
func shiftRefs(refs []image.PageRef, pv, v *image.VMA) []image.PageRef {
	shift := (int64(pv.Start) - int64(v.Start)) / image.PageSize
	moved := make([]image.PageRef, len(refs))
	for i, r := range refs {
		moved[i] = image.PageRef{Index: uint32(int64(r.Index) + shift), Hash: r.Hash}
	}
	return moved
}

// stored says the page table of pv, of the previous checkpoint, is in
// the store and not loaded (Table).
func stored(pv *image.VMA) bool { return pv.Table != nil && len(pv.Pages) == 0 }

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
// tree is released). A vma whose runs come from a previous table in the
// store gets a table built from it (VMA.Table, written to the store now):
// every chunk of it that no page was written in, and that keeps its place
// in the table, is taken by its hash without being read. A pre-copy pass
// (its checkpoint is the next dump's, in memory) or a store without
// stored tables gets VMA.Pages, the previous chunks read as needed.
func (t *Tracking) addReused(stats *image.Stats) error {
	var b *dedup.TableBuilder
	if tw, ok := t.repo.(dedup.TableWriter); ok && !t.preCopy && t.src != nil {
		b = dedup.NewTableBuilder(tw)
	}
	for _, tt := range t.tasks {
		for v, runs := range tt.reused {
			if b != nil && slices.ContainsFunc(runs, func(r reuseRun) bool { return r.pv != nil }) {
				n, err := t.tabulate(b, v, runs)
				if err != nil {
					return fmt.Errorf("page table of process %d vma %s: %w", tt.pid, v.DirName(), err)
				}
				stats.PagesTotal += int64(n)
				t.report.PagesReferenced += int64(n)
				continue
			}
			var all [][]image.PageRef
			for _, r := range runs {
				refs, err := t.runRefs(r, v)
				if err != nil {
					return fmt.Errorf("page table of process %d vma %s: %w", tt.pid, v.DirName(), err)
				}
				all = append(all, refs)
			}
			n := 0
			for _, refs := range all {
				n += len(refs)
			}
			v.Pages = mergeRuns(v.Pages, all)
			stats.PagesTotal += int64(n)
			t.report.PagesReferenced += int64(n)
		}
	}
	if b != nil {
		return b.Finish()
	}
	return nil
}

// chunk returns the references of chunk h of the previous checkpoint.
func (t *Tracking) chunk(h image.Hash) ([]image.PageRef, error) {
	if refs, ok := t.chunks[h]; ok {
		return refs, nil
	}
	refs, err := dedup.TableChunk(t.src, h)
	if err != nil {
		return nil, err
	}
	if t.chunks == nil {
		t.chunks = map[image.Hash][]image.PageRef{}
	}
	t.chunks[h] = refs
	return refs, nil
}

// leaves returns the chunk hashes of the stored table of previous vma pv.
func (t *Tracking) leaves(pv *image.VMA) ([]image.Hash, error) {
	if l, ok := t.leafs[pv]; ok {
		return l, nil
	}
	l, err := dedup.TableLeaves(t.src, pv.Table)
	if err != nil {
		return nil, err
	}
	if t.leafs == nil {
		t.leafs = map[*image.VMA][]image.Hash{}
	}
	t.leafs[pv] = l
	return l, nil
}

// dense says every page of pv has a reference: the reference at position
// i of its table is page i, so chunk k holds pages [k*ChunkRefs, ...).
func dense(pv *image.VMA) bool {
	return uint64(pv.Table.Pages) == (pv.End-pv.Start)/image.PageSize
}

// loadAll reads the whole stored table of previous vma pv into pv.Pages.
func (t *Tracking) loadAll(pv *image.VMA) error {
	leaves, err := t.leaves(pv)
	if err != nil {
		return err
	}
	var refs []image.PageRef
	for _, h := range leaves {
		c, err := dedup.TableChunk(t.src, h)
		if err != nil {
			return err
		}
		if len(refs) > 0 && c[0].Index <= refs[len(refs)-1].Index {
			return fmt.Errorf("previous table: chunk %s does not follow the one before", h)
		}
		refs = append(refs, c...)
	}
	if len(refs) != pv.Table.Pages || len(refs) > 0 && uint64(refs[len(refs)-1].Index) >= (pv.End-pv.Start)/image.PageSize {
		return fmt.Errorf("previous table of %d references for %d pages", len(refs), pv.Table.Pages)
	}
	pv.Pages, pv.Table = refs, nil
	return nil
}

// runRefs returns the references of run r of v, with indices of v.
func (t *Tracking) runRefs(r reuseRun, v *image.VMA) ([]image.PageRef, error) {
	if r.pv == nil {
		return r.refs, nil
	}
	pv := r.pv
	if stored(pv) {
		if err := t.loadAll(pv); err != nil {
			return nil, err
		}
	}
	lo, hi := uint32((r.from-pv.Start)/image.PageSize), uint32((r.to-pv.Start)/image.PageSize)
	a, _ := slices.BinarySearchFunc(pv.Pages, lo, func(p image.PageRef, i uint32) int { return cmp.Compare(p.Index, i) })
	b, _ := slices.BinarySearchFunc(pv.Pages, hi, func(p image.PageRef, i uint32) int { return cmp.Compare(p.Index, i) })
	refs := pv.Pages[a:b]
	if pv.Start != v.Start {
		refs = shiftRefs(refs, pv, v)
	}
	return refs, nil
}

// tabulate builds the page table of v in b: its copied references
// (v.Pages) merged with its runs. A run over a dense previous table at
// the same start (the same indices) is taken a chunk at a time: a chunk
// inside the run goes by its hash (b reads it only if it no longer falls
// on a chunk boundary of v's table); the others are read. It returns
// how many references it took from the runs.
func (t *Tracking) tabulate(b *dedup.TableBuilder, v *image.VMA, runs []reuseRun) (reused int, err error) {
	copied := v.Pages
	add := func(upTo uint32) error { // the copied references below upTo
		for len(copied) > 0 && copied[0].Index < upTo {
			if err := b.Add(v, copied[0]); err != nil {
				return err
			}
			copied = copied[1:]
		}
		return nil
	}
	addAll := func(refs []image.PageRef) error {
		for _, r := range refs {
			if err := add(r.Index); err != nil {
				return err
			}
			if err := b.Add(v, r); err != nil {
				return err
			}
			reused++
		}
		return nil
	}
	for ri, r := range runs {
		if r.pv == nil || !stored(r.pv) || !dense(r.pv) || r.pv.Start != v.Start {
			refs, err := t.runRefs(r, v)
			if err != nil {
				return 0, err
			}
			if err := addAll(refs); err != nil {
				return 0, err
			}
			continue
		}
		pv := r.pv
		leaves, err := t.leaves(pv)
		if err != nil {
			return 0, err
		}
		lo, hi := uint32((r.from-pv.Start)/image.PageSize), uint32((r.to-pv.Start)/image.PageSize)
		const n = dedup.ChunkRefs
		for k := lo / n; k*n < hi; k++ {
			cs, ce := k*n, min(k*n+n, uint32(pv.Table.Pages)) // the pages of chunk k
			a, e := max(cs, lo), min(ce, hi)
			if err := add(a); err != nil {
				return 0, err
			}
			h := leaves[k]
			load := func() ([]image.PageRef, error) { return t.chunk(h) }
			if a == cs && e == ce {
				last := ri == len(runs)-1 && e == hi && len(copied) == 0
				if err := b.AddChunk(v, h, int(ce-cs), cs, ce-1, last, load); err != nil {
					return 0, err
				}
				reused += int(ce - cs)
				continue
			}
			refs, err := load()
			if err != nil {
				return 0, err
			}
			if len(refs) != int(ce-cs) || refs[0].Index != cs {
				return 0, fmt.Errorf("previous table: chunk %s is not pages %d to %d", h, cs, ce-1)
			}
			if err := addAll(refs[a-cs : e-cs]); err != nil {
				return 0, err
			}
		}
	}
	for _, r := range copied {
		if err := b.Add(v, r); err != nil {
			return 0, err
		}
	}
	return reused, nil
}

// mergeRuns merges the copied references and the runs (ascending, apart
// from each other and from the copied ones) into one list in index
// order, built once: a 1 GiB vma is 9 MiB of references, and fresh memory
// is the dearest part of a dump on a VM. A vma nothing was copied of that
// is one run keeps that run's list (a part of the previous checkpoint's
// table, which nothing changes after).
func mergeRuns(copied []image.PageRef, runs [][]image.PageRef) []image.PageRef {
	if len(copied) == 0 && len(runs) == 1 {
		return runs[0]
	}
	n := len(copied)
	for _, r := range runs {
		n += len(r)
	}
	out := make([]image.PageRef, 0, n)
	for _, r := range runs {
		for len(r) > 0 {
			if len(copied) > 0 && copied[0].Index < r[0].Index {
				out, copied = append(out, copied[0]), copied[1:]
				continue
			}
			// the run's references up to the next copied one: at least one
			k := len(r)
			if len(copied) > 0 {
				next := copied[0].Index
				k = sort.Search(len(r), func(i int) bool { return r[i].Index > next })
			}
			out, r = append(out, r[:k]...), r[k:]
		}
	}
	return append(out, copied...)
}
