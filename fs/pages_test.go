package fs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// batchRepo is a memRepo whose pages can also be read in batches, counting
// the calls.
type batchRepo struct {
	*memRepo
	calls atomic.Int64
}

func (b *batchRepo) ReadPages(hashes []image.Hash, dst []byte) error {
	b.calls.Add(1)
	if len(dst) != len(hashes)*image.PageSize {
		return errors.New("bad buffer")
	}
	for i, h := range hashes {
		if err := b.ReadPage(h, dst[i*image.PageSize:]); err != nil {
			return err
		}
	}
	return nil
}

// TestReadPagesBatched reads a vma with holes at every page-aligned offset
// and length (batched) and at unaligned ones (ReadAt), and compares with
// its content.
func TestReadPagesBatched(t *testing.T) {
	m := &batchRepo{memRepo: newMemRepo()}
	task := &image.Task{PID: 1}
	holes := func(i int) bool { return i == 0 || i >= 5 && i < 9 || i == 15 }
	want := m.addVMA(task, 0x10000, 16, 3, holes)
	p := &image.PagesFile{VMA: task.VMAs[0], Src: m}
	for off := int64(0); off <= 16*image.PageSize; off += image.PageSize {
		for n := int64(image.PageSize); n <= 20*image.PageSize; n += image.PageSize {
			dest := bytes.Repeat([]byte{0xAA}, int(n))
			k, ok, err := readPagesBatched(p, dest, off)
			if !ok || err != nil {
				t.Fatalf("off %d len %d: batched %v, %v", off, n, ok, err)
			}
			end := min(off+n, int64(len(want)))
			if k != int(end-off) || !bytes.Equal(dest[:k], want[off:end]) {
				t.Fatalf("off %d len %d: %d bytes, content differs", off, n, k)
			}
		}
	}
	// A run of saved pages is one call.
	m.calls.Store(0)
	readPagesBatched(p, make([]byte, 16*image.PageSize), 0)
	if n := m.calls.Load(); n != 2 {
		t.Errorf("%d ReadPages calls for 2 runs of pages", n)
	}
	if _, ok, _ := readPagesBatched(p, make([]byte, 100), 10); ok {
		t.Error("an unaligned read was batched")
	}
	if _, ok, _ := (readPagesBatched(&image.PagesFile{VMA: p.VMA, Src: m.memRepo}, make([]byte, image.PageSize), 0)); ok {
		t.Error("a source without ReadPages was batched")
	}
	m.pages = nil // every page lost
	if _, _, err := readPagesBatched(p, make([]byte, image.PageSize*2), image.PageSize); err == nil {
		t.Error("no error for a missing page")
	}
}

// TestPagesThroughMountBatched reads a pages file of the real renderer
// through a mount of a batching repo.
func TestPagesThroughMountBatched(t *testing.T) {
	m := &batchRepo{memRepo: newMemRepo()}
	_, want := testCheckpoint(m.memRepo, "c1", "", t0, 1)
	if os.Getuid() != 0 {
		t.Skip("needs root (FUSE mount)")
	}
	srv, err := MountRepo(m, t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Unmount()
	p := filepath.Join(srv.Mountpoint(), "c1", "tasks", "100", "vmas", "400000-440000", "pages")
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read: %d bytes, %v (want %d, equal %v)", len(got), err, len(want), bytes.Equal(got, want))
	}
	if m.calls.Load() == 0 {
		t.Error("the mount never called ReadPages")
	}
}
