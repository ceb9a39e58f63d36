package sparse

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// memfdWith returns a memfd (tmpfs keeps holes) of size bytes with one
// page written at each offset of pages.
func memfdWith(t *testing.T, size int64, pages ...int64) int {
	t.Helper()
	fd, err := unix.MemfdCreate("sparse-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Skipf("memfd_create: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	page := make([]byte, 4096)
	page[0] = 1
	for _, off := range pages {
		if _, err := unix.Pwrite(fd, page, off); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

func collect(t *testing.T, fd int, start, end int64) []Extent {
	t.Helper()
	var out []Extent
	for e, err := range Data(fd, start, end) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func TestData(t *testing.T) {
	const pg = 4096
	fd := memfdWith(t, 16*pg, 0, pg, 5*pg, 15*pg)
	for _, c := range []struct {
		name       string
		start, end int64
		want       []Extent
	}{
		{"whole", 0, 16 * pg, []Extent{{0, 2 * pg}, {5 * pg, 6 * pg}, {15 * pg, 16 * pg}}},
		{"cut at end", 0, 5*pg + 100, []Extent{{0, 2 * pg}, {5 * pg, 5*pg + 100}}},
		{"from a hole", 2 * pg, 16 * pg, []Extent{{5 * pg, 6 * pg}, {15 * pg, 16 * pg}}},
		{"from inside data", pg, 3 * pg, []Extent{{pg, 2 * pg}}},
		{"only a hole", 6 * pg, 15 * pg, nil},
		{"empty range", 3 * pg, 3 * pg, nil},
		{"past the end", 16 * pg, 32 * pg, nil},
	} {
		if got := collect(t, fd, c.start, c.end); !slices.Equal(got, c.want) {
			t.Errorf("%s: Data(%d, %d) = %v, want %v", c.name, c.start, c.end, got, c.want)
		}
	}
}

func TestDataStopsEarly(t *testing.T) {
	fd := memfdWith(t, 8*4096, 0, 2*4096, 4*4096)
	n := 0
	for _, err := range Data(fd, 0, 8*4096) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 2 {
			break
		}
	}
	if n != 2 {
		t.Fatalf("got %d extents before break, want 2", n)
	}
}

func TestDataBadFD(t *testing.T) {
	for _, err := range Data(-1, 0, 4096) {
		if err == nil {
			t.Fatal("Data on fd -1 yielded no error")
		}
		return
	}
	t.Fatal("Data on fd -1 yielded nothing")
}
