package image

import (
	"bytes"
	"testing"
)

// TestRenderSharedAnon: the dumper saves a page of shared anonymous memory
// once, in the first vma mapping it; Render shows it in every vma of the
// object, at the vma's own index (offsets differ after a split).
func TestRenderSharedAnon(t *testing.T) {
	src := memSource{}
	a, b := src.add('a'), src.add('b')
	parent := &VMA{Start: 0x10000, End: 0x14000, Perms: "rw-s", Dev: "00:01", Inode: 7, Name: "/dev/zero (deleted)",
		Kind: VMAShmem, Pages: []PageRef{{Index: 1, Hash: a}, {Index: 3, Hash: b}}}
	// The child maps the object from offset 0x2000 on, and saved nothing.
	child := &VMA{Start: 0x50000, End: 0x52000, Perms: "rw-s", Offset: 0x2000, Dev: "00:01", Inode: 7,
		Name: "/dev/zero (deleted)", Kind: VMAShmem}
	c := &Checkpoint{RootPID: 1, Tasks: []*Task{
		{PID: 1, VMAs: []*VMA{parent}}, {PID: 2, PPID: 1, VMAs: []*VMA{child}}}}
	root := Render(c, src)
	pages := root.Lookup("tasks").(*Dir).Lookup("2").(*Dir).Lookup("vmas").(*Dir).Lookup(child.DirName()).(*Dir).Lookup("pages").(File)
	buf := make([]byte, 2*PageSize)
	if _, err := pages.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:PageSize], make([]byte, PageSize)) || buf[PageSize] != 'b' {
		t.Fatalf("child's pages: first page %q..., second %q...", buf[:4], buf[PageSize:PageSize+4])
	}
	if len(child.Pages) != 0 {
		t.Fatal("Render changed the model")
	}
}
