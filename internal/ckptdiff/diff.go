// Package ckptdiff compares two checkpoints cheaply, from their page
// tables and records alone (no page is read): per task and vma the pages
// added, changed and removed, the fds opened and closed, and the files of
// the rendered tree (docs/tree-format.md) that differ.
package ckptdiff

import (
	"bytes"
	"path"
	"slices"
	"strconv"

	"github.com/ckptfs/ckptfs/image"
)

// Status of a task, vma or fd between the two checkpoints.
const (
	Added   = "added"
	Removed = "removed"
	Changed = "changed"
	Same    = "same"
)

// Pages counts pages between two versions of memory.
type Pages struct {
	Added   int `json:"pages_added"`
	Changed int `json:"pages_changed"`
	Removed int `json:"pages_removed"`
}

// Bytes are the counts in bytes.
func (p Pages) Bytes() (added, changed, removed int64) {
	return int64(p.Added) * image.PageSize, int64(p.Changed) * image.PageSize, int64(p.Removed) * image.PageSize
}

func (p *Pages) add(q Pages) { p.Added += q.Added; p.Changed += q.Changed; p.Removed += q.Removed }

// Zero reports whether no page differs.
func (p Pages) Zero() bool { return p == Pages{} }

// VMA is one mapping's difference, matched by start address.
type VMA struct {
	Start, End uint64
	Name       string
	Status     string
	Pages
}

// FD is an fd that was opened, closed or now refers to something else.
type FD struct {
	Num    int
	Status string // Added (opened), Removed (closed), Changed
	Path   string // in the second checkpoint (the first for Removed)
	Was    string // for Changed: the path in the first
}

// Task is one process's difference, matched by pid.
type Task struct {
	PID    int
	Comm   string
	Status string
	Pages        // over all its vmas
	VMAs   []VMA // those that differ
	FDs    []FD  // those that differ
}

// Files are the paths of the rendered tree that differ.
type Files struct {
	Added, Removed, Changed []string
}

// Diff is the difference from checkpoint A to B.
type Diff struct {
	Tasks []Task // every task of either, A's order then B's new ones
	Pages        // over every task
	Files Files
}

// Compare computes the difference from a to b.
func Compare(a, b *image.Checkpoint) *Diff {
	d := &Diff{}
	for _, ta := range a.Tasks {
		t := compareTask(ta, b.Task(ta.PID))
		d.Pages.add(t.Pages)
		d.Tasks = append(d.Tasks, t)
	}
	for _, tb := range b.Tasks {
		if a.Task(tb.PID) == nil {
			t := compareTask(nil, tb)
			d.Pages.add(t.Pages)
			d.Tasks = append(d.Tasks, t)
		}
	}
	d.Files = compareTrees(image.Render(a, nil), image.Render(b, nil))
	return d
}

func compareTask(a, b *image.Task) Task {
	var t Task
	switch {
	case a == nil:
		t = Task{PID: b.PID, Comm: b.Comm, Status: Added}
	case b == nil:
		t = Task{PID: a.PID, Comm: a.Comm, Status: Removed}
	default:
		t = Task{PID: b.PID, Comm: b.Comm, Status: Same}
	}
	var av, bv []*image.VMA
	if a != nil {
		av = a.VMAs
	}
	if b != nil {
		bv = b.VMAs
	}
	byStart := map[uint64]*image.VMA{}
	for _, v := range bv {
		byStart[v.Start] = v
	}
	seen := map[uint64]bool{}
	for _, va := range av {
		vb := byStart[va.Start]
		seen[va.Start] = true
		if v, ok := compareVMA(va, vb); ok {
			t.VMAs = append(t.VMAs, v)
			t.Pages.add(v.Pages)
		}
	}
	for _, vb := range bv {
		if !seen[vb.Start] {
			if v, ok := compareVMA(nil, vb); ok {
				t.VMAs = append(t.VMAs, v)
				t.Pages.add(v.Pages)
			}
		}
	}
	if a != nil && b != nil {
		t.FDs = compareFDs(a.FDs, b.FDs)
		if len(t.VMAs) > 0 || len(t.FDs) > 0 {
			t.Status = Changed
		}
	}
	return t
}

// compareVMA compares one mapping (either may be nil); ok is false when
// nothing differs.
func compareVMA(a, b *image.VMA) (VMA, bool) {
	switch {
	case a == nil:
		return VMA{Start: b.Start, End: b.End, Name: b.Name, Status: Added, Pages: Pages{Added: len(b.Pages)}}, true
	case b == nil:
		return VMA{Start: a.Start, End: a.End, Name: a.Name, Status: Removed, Pages: Pages{Removed: len(a.Pages)}}, true
	}
	v := VMA{Start: b.Start, End: b.End, Name: b.Name, Status: Changed}
	// Both page lists are in ascending index: merge them.
	i, j := 0, 0
	for i < len(a.Pages) || j < len(b.Pages) {
		switch {
		case j == len(b.Pages) || i < len(a.Pages) && a.Pages[i].Index < b.Pages[j].Index:
			v.Removed++
			i++
		case i == len(a.Pages) || b.Pages[j].Index < a.Pages[i].Index:
			v.Added++
			j++
		default:
			if a.Pages[i].Hash != b.Pages[j].Hash {
				v.Changed++
			}
			i++
			j++
		}
	}
	if v.Pages.Zero() && a.End == b.End && a.Perms == b.Perms && a.Name == b.Name {
		return v, false
	}
	return v, true
}

func compareFDs(a, b []*image.FD) []FD {
	var out []FD
	bm := map[int]*image.FD{}
	for _, f := range b {
		bm[f.Num] = f
	}
	am := map[int]*image.FD{}
	for _, f := range a {
		am[f.Num] = f
		switch g := bm[f.Num]; {
		case g == nil:
			out = append(out, FD{Num: f.Num, Status: Removed, Path: f.Path})
		case g.Path != f.Path || g.Kind != f.Kind || g.Ino != f.Ino:
			out = append(out, FD{Num: f.Num, Status: Changed, Path: g.Path, Was: f.Path})
		}
	}
	for _, g := range b {
		if am[g.Num] == nil {
			out = append(out, FD{Num: g.Num, Status: Added, Path: g.Path})
		}
	}
	slices.SortStableFunc(out, func(x, y FD) int { return x.Num - y.Num })
	return out
}

// compareTrees lists the paths whose content differs: small files by
// content, symlinks by target, pages files by their page tables; core
// files (generated from the rest) not at all.
func compareTrees(a, b *image.Dir) Files {
	fa, fb := map[string]string{}, map[string]string{}
	walk(a, "", fa)
	walk(b, "", fb)
	var f Files
	for p, ca := range fa {
		cb, ok := fb[p]
		switch {
		case !ok:
			f.Removed = append(f.Removed, p)
		case ca != cb:
			f.Changed = append(f.Changed, p)
		}
	}
	for p := range fb {
		if _, ok := fa[p]; !ok {
			f.Added = append(f.Added, p)
		}
	}
	slices.Sort(f.Added)
	slices.Sort(f.Removed)
	slices.Sort(f.Changed)
	return f
}

func walk(d *image.Dir, dir string, out map[string]string) {
	for _, e := range d.Entries {
		p := path.Join(dir, e.Name)
		switch n := e.Node.(type) {
		case *image.Dir:
			walk(n, p, out)
		case *image.Symlink:
			out[p] = "-> " + n.Target
		case image.Bytes:
			out[p] = string(bytes.Clone(n))
		case *image.Lazy:
			out[p] = string(n.Gen())
		case *image.PagesFile:
			// Its content is its page table: the hash of every page.
			var b []byte
			for _, r := range n.VMA.Pages {
				b = strconv.AppendUint(b, uint64(r.Index), 16)
				b = append(b, r.Hash[:]...)
			}
			out[p] = string(b)
		}
	}
}

// VMAName is how a vma is named in a diff: its address range and maps
// name.
func VMAName(v VMA) string {
	s := strconv.FormatUint(v.Start, 16) + "-" + strconv.FormatUint(v.End, 16)
	if v.Name != "" {
		s += " " + v.Name
	}
	return s
}
