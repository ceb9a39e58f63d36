package directio

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestReadFull(t *testing.T) {
	want := make([]byte, 3*Align)
	for i := range want {
		want[i] = byte(i * 7)
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, b := make([]byte, 100), make([]byte, 2*Align-100)
	if err := ReadFull(int(f.Fd()), [][]byte{a, b}, Align); err != nil {
		t.Fatal(err)
	}
	if got := append(a, b...); !bytes.Equal(got, want[Align:]) {
		t.Fatal("ReadFull read other bytes than the file's")
	}
	err = ReadFull(int(f.Fd()), [][]byte{make([]byte, 2*Align)}, 2*Align)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read past the end: %v, want io.ErrUnexpectedEOF", err)
	}
	// Just written: all in the page cache.
	if n, err := CachedBytes(int(f.Fd()), 0, int64(len(want))); err != nil || n != int64(len(want)) {
		t.Fatalf("CachedBytes of a file just written: %d, %v; want %d", n, err, len(want))
	}
}
