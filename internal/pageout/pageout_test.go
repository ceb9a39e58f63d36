package pageout

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/proc"
)

// rssFile returns this process's RssFile in bytes.
func rssFile(t *testing.T) int64 {
	t.Helper()
	b, err := proc.Read(os.Getpid(), "status")
	if err != nil {
		t.Fatal(err)
	}
	var kib int64
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "RssFile:" {
			for _, c := range f[1] {
				kib = kib*10 + int64(c-'0')
			}
		}
	}
	return kib << 10
}

// A shared mapping of a file, written through, leaves the resident set
// when paged out; what was written stays, in the mapping and in the file;
// another file's mapping is left alone.
func TestFilesPagesOutWhatItMatches(t *testing.T) {
	const size = 32 << 20
	dir := t.TempDir()
	mapFile := func(name string) []byte {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Munmap(m) })
		for i := 0; i < size; i += 4096 {
			m[i] = byte(i>>12) | 1
		}
		return m
	}
	m := mapFile("a.vlog")
	other := mapFile("b.keep")
	before := rssFile(t)
	n, err := Files(func(p string) bool { return strings.HasSuffix(p, ".vlog") })
	if err != nil {
		t.Fatal(err)
	}
	if n != size {
		t.Fatalf("advised %d bytes, want %d", n, size)
	}
	after := rssFile(t)
	// The other mapping stays: at most the paged-out one leaves.
	if before-after < size/2 || before-after > size+4<<20 {
		t.Fatalf("RssFile %d MiB before, %d after paging out %d MiB", before>>20, after>>20, size>>20)
	}
	for i := 0; i < size; i += 4096 {
		if m[i] != byte(i>>12)|1 || other[i] != byte(i>>12)|1 {
			t.Fatalf("byte at %#x changed", i)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "a.vlog"))
	if err != nil || !bytes.Equal(b[:4096*4], m[:4096*4]) {
		t.Fatalf("file differs from what was written (%v)", err)
	}
}
