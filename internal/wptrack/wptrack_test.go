package wptrack

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// tracked maps n pages, fills them, and arms async write-protect on them
// through a userfaultfd of this process.
func tracked(t *testing.T, n int) (mem []byte, ufd int, pagemap *os.File) {
	t.Helper()
	fd, _, e := unix.Syscall(unix.SYS_USERFAULTFD, OpenFlags, 0, 0)
	if e != 0 {
		t.Skipf("userfaultfd: %v (kernel or vm.unprivileged_userfaultfd)", e)
	}
	ufd = int(fd)
	t.Cleanup(func() { unix.Close(ufd) })
	if err := EnableAsyncWP(ufd); err != nil {
		t.Skipf("kernel without async write-protect: %v", err)
	}
	mem, err := unix.Mmap(-1, 0, n*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	for i := range n {
		mem[i*pageSize] = 1
	}
	start := addr(mem)
	if err := Register(ufd, start, uint64(len(mem))); err != nil {
		t.Fatal(err)
	}
	if err := Protect(ufd, start, uint64(len(mem))); err != nil {
		t.Fatal(err)
	}
	pagemap, err = os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pagemap.Close() })
	return mem, ufd, pagemap
}

func written(t *testing.T, pm *os.File, mem []byte, rearm bool) []int {
	t.Helper()
	start := addr(mem)
	regions, err := Written(int(pm.Fd()), start, start+uint64(len(mem)), rearm)
	if err != nil {
		t.Fatal(err)
	}
	var pages []int
	for i, w := range Bitmap(regions, start, start+uint64(len(mem))) {
		if w {
			pages = append(pages, i)
		}
	}
	return pages
}

func same(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestWrittenAndRearm(t *testing.T) {
	mem, _, pm := tracked(t, 64)
	if got := written(t, pm, mem, false); len(got) != 0 {
		t.Fatalf("written right after protect: %v", got)
	}
	mem[3*pageSize+7] = 2
	for i := 10; i < 13; i++ {
		mem[i*pageSize+100] = 3
	}
	// A write by the kernel on the process' behalf counts too.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w.Write([]byte("kernel"))
	w.Close()
	if _, err := r.Read(mem[40*pageSize : 40*pageSize+6]); err != nil {
		t.Fatal(err)
	}
	want := []int{3, 10, 11, 12, 40}
	if got := written(t, pm, mem, false); !same(got, want) {
		t.Fatalf("written: %v, want %v", got, want)
	}
	if got := written(t, pm, mem, true); !same(got, want) {
		t.Fatalf("written (re-arm): %v, want %v", got, want)
	}
	if got := written(t, pm, mem, false); len(got) != 0 {
		t.Fatalf("written after re-arm: %v", got)
	}
	mem[5*pageSize] = 9
	if got := written(t, pm, mem, true); !same(got, []int{5}) {
		t.Fatalf("written after one more write: %v, want [5]", got)
	}
	if mem[3*pageSize+7] != 2 || mem[40*pageSize] != 'k' {
		t.Fatal("tracked memory lost a write")
	}
}

func TestWrittenRefusesUntracked(t *testing.T) {
	tracked(t, 1) // skips where the kernel lacks the features
	mem, err := unix.Mmap(-1, 0, 4*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	mem[0] = 1
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	start := addr(mem)
	if _, err := Written(int(pm.Fd()), start, start+uint64(len(mem)), true); !errors.Is(err, ErrNotTracked) {
		t.Fatalf("scan of an unregistered range: %v, want ErrNotTracked", err)
	}
}

func TestClosingDropsTracking(t *testing.T) {
	mem, ufd, pm := tracked(t, 8)
	unix.Close(ufd)
	start := addr(mem)
	if _, err := Written(int(pm.Fd()), start, start+uint64(len(mem)), false); !errors.Is(err, ErrNotTracked) {
		t.Fatalf("scan after the userfaultfd closed: %v, want ErrNotTracked", err)
	}
	mem[0] = 5 // no fault, no protection left
}

func TestBitmap(t *testing.T) {
	b := Bitmap([]Region{{0x1000, 0x3000, PageWritten}, {0x5000, 0x9000, PageWritten}}, 0x2000, 0x7000)
	want := []bool{true, false, false, true, true}
	for i := range want {
		if b[i] != want[i] {
			t.Fatalf("bitmap %v, want %v", b, want)
		}
	}
}

func TestPages(t *testing.T) {
	mem, err := unix.Mmap(-1, 0, 8*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	mem[1*pageSize] = 1
	mem[2*pageSize] = 1
	sink = mem[5*pageSize] // a read: the zero page
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	start := addr(mem)
	regions, err := Pages(int(pm.Fd()), start, start+8*pageSize, PagePresent|PageSwapped, PagePresent|PagePFNZero)
	if err != nil {
		t.Skipf("PAGEMAP_SCAN: %v", err)
	}
	want := []Region{{start + pageSize, start + 3*pageSize, PagePresent}, {start + 5*pageSize, start + 6*pageSize, PagePresent | PagePFNZero}}
	if len(regions) != len(want) || regions[0] != want[0] || regions[1] != want[1] {
		t.Fatalf("regions %+v, want %+v", regions, want)
	}
}

var sink byte
