package ckptdiff

import (
	"slices"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/image"
)

func h(b byte) image.Hash { return image.Hash{b} }

func pages(refs ...[2]int) []image.PageRef {
	var out []image.PageRef
	for _, r := range refs {
		out = append(out, image.PageRef{Index: uint32(r[0]), Hash: h(byte(r[1]))})
	}
	return out
}

func ckpt(id string, tasks ...*image.Task) *image.Checkpoint {
	return &image.Checkpoint{ID: id, Time: time.Unix(1e9, 0), RootPID: tasks[0].PID, Tasks: tasks}
}

func TestCompare(t *testing.T) {
	heapA := &image.VMA{Start: 0x1000, End: 0x9000, Perms: "rw-p", Name: "[heap]", Kind: image.VMAHeap,
		Pages: pages([2]int{0, 1}, [2]int{1, 2}, [2]int{2, 3}, [2]int{5, 4})}
	heapB := &image.VMA{Start: 0x1000, End: 0x9000, Perms: "rw-p", Name: "[heap]", Kind: image.VMAHeap,
		Pages: pages([2]int{0, 1}, [2]int{1, 9}, [2]int{3, 3}, [2]int{5, 4}, [2]int{6, 7})} // 1 changed, 2 gone, 3 and 6 new
	same := func() *image.VMA {
		return &image.VMA{Start: 0x10000, End: 0x12000, Perms: "r--p", Name: "/bin/x", Kind: image.VMAFile, Pages: pages([2]int{0, 5})}
	}
	gone := &image.VMA{Start: 0x20000, End: 0x22000, Perms: "rw-p", Kind: image.VMAAnon, Pages: pages([2]int{0, 6}, [2]int{1, 6})}
	fresh := &image.VMA{Start: 0x30000, End: 0x31000, Perms: "rw-p", Kind: image.VMAAnon, Pages: pages([2]int{0, 8})}
	a := ckpt("a",
		&image.Task{PID: 10, Comm: "main", VMAs: []*image.VMA{heapA, same(), gone},
			FDs: []*image.FD{{Num: 0, Kind: "chr", Path: "/dev/null"}, {Num: 3, Kind: "file", Path: "/tmp/old"}, {Num: 4, Kind: "file", Path: "/tmp/x", Ino: 1}}},
		&image.Task{PID: 11, Comm: "child", VMAs: []*image.VMA{same()}})
	b := ckpt("b",
		&image.Task{PID: 10, Comm: "main", VMAs: []*image.VMA{heapB, same(), fresh},
			FDs: []*image.FD{{Num: 0, Kind: "chr", Path: "/dev/null"}, {Num: 4, Kind: "file", Path: "/tmp/y", Ino: 2}, {Num: 5, Kind: "file", Path: "/tmp/new"}}},
		&image.Task{PID: 12, Comm: "newchild", VMAs: []*image.VMA{same()}})
	d := Compare(a, b)

	if len(d.Tasks) != 3 {
		t.Fatalf("tasks: %+v", d.Tasks)
	}
	main, child, newchild := d.Tasks[0], d.Tasks[1], d.Tasks[2]
	if main.Status != Changed || child.Status != Removed || child.PID != 11 || newchild.Status != Added || newchild.PID != 12 {
		t.Errorf("statuses: %s %s(%d) %s(%d)", main.Status, child.Status, child.PID, newchild.Status, newchild.PID)
	}
	if want := (Pages{Added: 2 + 1, Changed: 1, Removed: 1 + 2}); main.Pages != want {
		t.Errorf("main's pages %+v, want %+v", main.Pages, want)
	}
	if len(main.VMAs) != 3 || main.VMAs[0].Status != Changed || main.VMAs[1].Status != Removed || main.VMAs[2].Status != Added {
		t.Errorf("main's vmas: %+v", main.VMAs)
	}
	if got := VMAName(main.VMAs[0]); got != "1000-9000 [heap]" {
		t.Errorf("VMAName %q", got)
	}
	wantFDs := []FD{{Num: 3, Status: Removed, Path: "/tmp/old"}, {Num: 4, Status: Changed, Path: "/tmp/y", Was: "/tmp/x"}, {Num: 5, Status: Added, Path: "/tmp/new"}}
	if !slices.Equal(main.FDs, wantFDs) {
		t.Errorf("fds %+v, want %+v", main.FDs, wantFDs)
	}
	if want := (Pages{Added: 3 + 1, Changed: 1, Removed: 3 + 1}); d.Pages != want {
		t.Errorf("total %+v, want %+v", d.Pages, want)
	}
	if added, _, _ := d.Pages.Bytes(); added != 4*image.PageSize {
		t.Errorf("bytes added %d", added)
	}
	if !slices.Contains(d.Files.Changed, "info") || !slices.Contains(d.Files.Added, "tasks/12/status") ||
		!slices.Contains(d.Files.Removed, "tasks/11/status") || !slices.Contains(d.Files.Changed, "tasks/10/vmas/1000-9000/pagemap") {
		t.Errorf("files: %+v", d.Files)
	}
	if slices.Contains(d.Files.Changed, "tasks/10/vmas/10000-12000/pagemap") {
		t.Errorf("an unchanged vma's pagemap is listed")
	}

	// A checkpoint against itself: nothing but nothing.
	d = Compare(a, a)
	for _, tk := range d.Tasks {
		if tk.Status != Same || len(tk.VMAs) != 0 || len(tk.FDs) != 0 {
			t.Errorf("self diff: %+v", tk)
		}
	}
	if !d.Pages.Zero() || len(d.Files.Added)+len(d.Files.Removed)+len(d.Files.Changed) != 0 {
		t.Errorf("self diff: %+v %+v", d.Pages, d.Files)
	}
}
