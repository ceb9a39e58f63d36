package directio

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestAligned(t *testing.T) {
	m, err := unix.Mmap(-1, 0, 3*Align, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	if !Aligned([][]byte{m[:Align], m[Align:], nil}) {
		t.Fatal("page-aligned buffers of whole pages: not aligned")
	}
	if Aligned([][]byte{m[1 : Align+1]}) {
		t.Fatal("buffer at an odd address: aligned")
	}
	if Aligned([][]byte{m[:100]}) {
		t.Fatal("buffer of 100 bytes: aligned")
	}
	// And the kernel agrees: an aligned buffer writes with O_DIRECT
	// where the file system supports it.
	path := filepath.Join(t.TempDir(), "f")
	fd, err := unix.Open(path, unix.O_CREAT|unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Skipf("O_DIRECT not supported in %s: %v", filepath.Dir(path), err)
	}
	defer unix.Close(fd)
	m[0] = 7
	if _, err := unix.Pwritev(fd, [][]byte{m[:Align]}, Align); err != nil {
		t.Fatalf("O_DIRECT write of an aligned buffer: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) != 2*Align || b[Align] != 7 {
		t.Fatalf("read back: %d bytes, %v", len(b), err)
	}
}

func TestHugeBuffer(t *testing.T) {
	if _, err := HugeBuffer(100); err == nil {
		t.Fatal("a buffer of 100 bytes was made")
	}
	b, err := HugeBuffer(2 * HugeSize)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 2*HugeSize || !Aligned([][]byte{b}) || uintptr(unsafe.Pointer(&b[0]))%HugeSize != 0 {
		t.Fatalf("buffer of %d bytes at %p", len(b), &b[0])
	}
	for i := range b {
		b[i] = byte(i)
	}
	if b[len(b)-1] != byte(len(b)-1) {
		t.Fatal("memory does not read back")
	}
	if err := FreeHuge(b); err != nil {
		t.Fatal(err)
	}
}
