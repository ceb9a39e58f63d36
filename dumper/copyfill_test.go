package dumper

import (
	"bytes"
	"os"
	"slices"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// TestSpillStripesRoundTrip writes chunks from several goroutines at once,
// in no order, and maps each back; consecutive chunks are in different
// files.
func TestSpillStripesRoundTrip(t *testing.T) {
	s, err := newSpillStripes(t.TempDir(), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	const chunks = 7
	if err := s.prefault(chunks * spillStripe); err != nil {
		t.Fatal(err)
	}
	data := func(k int) []byte {
		n := spillStripe
		if k == chunks-1 {
			n = 3 * image.PageSize // the last chunk may be short
		}
		return bytes.Repeat([]byte{byte(k + 1)}, n)
	}
	var wg sync.WaitGroup
	errs := make([]error, chunks)
	for _, k := range []int{3, 0, 6, 1, 5, 2, 4} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = s.writeAt(data(k), int64(k)*spillStripe)
		}()
	}
	wg.Wait()
	for k := range chunks {
		if errs[k] != nil {
			t.Fatalf("chunk %d: %v", k, errs[k])
		}
		want := data(k)
		got, err := s.mapBack(int64(k)*spillStripe, len(want))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("chunk %d mapped back: %v", k, err)
		}
		s.release(got, int64(k)*spillStripe)
	}
	file := func(k int) *spillFile { f, _ := s.at(int64(k) * spillStripe); return f }
	if file(0) == file(1) || file(0) != file(2) {
		t.Fatal("chunks are not spread a chunk a file in turn")
	}
}

// TestPresentPages maps 64 pages of this process: written pages are
// listed, those only read (the shared zero page) and untouched ones are
// not, and the list is what pagemap says less the zero page.
func TestPresentPages(t *testing.T) {
	const n = 64
	b, err := unix.Mmap(-1, 0, n*image.PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)
	var want []uint32
	var sink byte
	for i := 0; i < n; i++ {
		switch i % 3 {
		case 0:
			b[i*image.PageSize] = 1
			want = append(want, uint32(i))
		case 1:
			sink += b[i*image.PageSize] // read: the zero page
		}
	}
	_ = sink
	start := uint64(uintptr(unsafe.Pointer(&b[0])))
	v := &image.VMA{Start: start, End: start + n*image.PageSize, Perms: "rw-p", Kind: image.VMAAnon}
	if !scansPresence(v) {
		t.Fatal("a private anonymous vma is not scanned")
	}
	pm, err := proc.OpenPagemap(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	got, ok, err := presentPages(pm, v)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Skip("the kernel has no PAGEMAP_SCAN (before 6.7)")
	}
	if !slices.Equal(got, want) {
		t.Fatalf("present pages %v, want %v", got, want)
	}
	for _, v := range []*image.VMA{
		{Perms: "rw-s", Kind: image.VMAShmem},
		{Perms: "rw-p", Kind: image.VMAFile},
		{Perms: "r-xp", Kind: image.VMAVdso},
	} {
		if scansPresence(v) {
			t.Errorf("%s %s is scanned", v.Kind, v.Perms)
		}
	}
}
