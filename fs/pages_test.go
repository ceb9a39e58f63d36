package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
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

// TestPagesReadAhead reads a big pages file of a real store through the
// mount, its packs out of the page cache: whole (as cat does, from the
// read-ahead chunks), then in 1 MiB reads backwards (request by
// request); with a byte of one page damaged in its pack, reading the
// whole file fails with EIO, and so does a read of that page, while the
// pages before and after it read right.
func TestPagesReadAhead(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (FUSE mount)")
	}
	dir := t.TempDir()
	s, err := dedup.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	const n = 6000 // 23.4 MiB
	hole := func(i int) bool { return i%1000 >= 10 && i%1000 < 20 || i >= n-3 }
	c, v := storeVMACheckpoint(t, s, n, hole)
	s.Close()
	want := make([]byte, n*image.PageSize)
	for i := range n {
		if !hole(i) {
			copy(want[i*image.PageSize:], pageContent(9, i))
		}
	}
	srv := mountStore(t, dir, Options{Logf: t.Logf})
	p := filepath.Join(srv.Mountpoint(), c.ID, "tasks", "100", "vmas", v.DirName(), "pages")
	packs, _ := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
	uncache := func() {
		t.Helper()
		for _, f := range append(packs, p) {
			fd, err := os.Open(f)
			if err != nil {
				t.Fatal(err)
			}
			unix.Fadvise(int(fd.Fd()), 0, 0, unix.FADV_DONTNEED)
			fd.Close()
		}
	}

	uncache()
	before := raReplies.Load()
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read whole: %d bytes, %v (want %d, equal %v)", len(got), err, len(want), bytes.Equal(got, want))
	}
	if raReplies.Load() == before {
		t.Error("no request was answered from the read-ahead")
	}
	uncache()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for off := int64(len(want)) - int64(len(buf)); off >= 0; off -= 3 * int64(len(buf)) {
		k, err := f.ReadAt(buf, off)
		if k != len(buf) || !bytes.Equal(buf, want[off:off+int64(k)]) {
			t.Fatalf("read at %d: %d bytes, %v, equal %v", off, k, err, bytes.Equal(buf[:k], want[off:off+int64(k)]))
		}
	}

	// Damage page 3000 in its pack.
	const bad = 3000
	damaged := false
	for _, pk := range packs {
		b, err := os.ReadFile(pk)
		if err != nil {
			t.Fatal(err)
		}
		if at := bytes.Index(b, pageContent(9, bad)); at >= 0 {
			fd, err := os.OpenFile(pk, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, err = fd.WriteAt([]byte{^b[at+100]}, int64(at+100))
			fd.Close()
			if err != nil {
				t.Fatal(err)
			}
			damaged = true
			break
		}
	}
	if !damaged {
		t.Fatal("page not found in the packs")
	}
	streams.reset() // chunks read before the damage: right bytes, but not what this test reads
	uncache()
	if _, err := os.ReadFile(p); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of the damaged file: %v, want EIO", err)
	}
	uncache()
	readRange := func(from, to int64) error {
		for off := from; off < to; off += int64(len(buf)) {
			k := min(int64(len(buf)), to-off)
			if _, err := f.ReadAt(buf[:k], off); err != nil {
				return fmt.Errorf("read at %d: %w", off, err)
			}
			if !bytes.Equal(buf[:k], want[off:off+k]) {
				return fmt.Errorf("read at %d: wrong bytes", off)
			}
		}
		return nil
	}
	if err := readRange(0, bad*image.PageSize); err != nil {
		t.Fatalf("pages before the damaged one: %v", err)
	}
	if err := readRange(bad*image.PageSize, (bad+1)*image.PageSize); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read of the damaged page: %v, want EIO", err)
	}
	if err := readRange((bad+1)*image.PageSize, int64(len(want))); err != nil {
		t.Fatalf("pages after the damaged one: %v", err)
	}
}
