package restorer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// anonPages returns the pages file and the vma of the biggest anonymous
// vma of task pid in the tree at dir (the counter's region).
func anonPages(t *testing.T, dir string, pid int) (string, *image.VMA) {
	t.Helper()
	c, err := image.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var best *image.VMA
	for _, tk := range c.Tasks {
		if tk.PID != pid {
			continue
		}
		for _, v := range tk.VMAs {
			if !zeroFillOK(v) {
				continue
			}
			// Load leaves the page tables out: pagemap has them.
			pm := filepath.Join(filepath.Dir(image.PagesPath(dir, pid, v)), "pagemap")
			if v.Pages, err = readPagemap(pm, v); err != nil {
				t.Fatal(err)
			}
			if len(v.Pages) > 8 && (best == nil || len(v.Pages) > len(best.Pages)) {
				best = v
			}
		}
	}
	if best == nil {
		t.Fatal("no anonymous vma with pages")
	}
	return image.PagesPath(dir, pid, best), best
}

// restoreRefused restores dir, wants an error with parts and no process
// left behind.
func restoreRefused(t *testing.T, dir string, before []int, parts ...string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := Restore(dir, Options{}); done <- err }()
	select {
	case err := <-done:
		wantErr(t, err, parts...)
	case <-time.After(2 * time.Minute):
		t.Fatal("restore hangs")
	}
	if got := children(); len(got) != len(before) {
		t.Fatalf("children after a refused restore: %v, before %v", got, before)
	}
}

// TestRestoreVerifiesPages damages a copy of a checkpoint in every way a
// page can be wrong: each is refused naming task, vma and page, before any
// process is created; --no-verify-pages restores it anyway.
func TestRestoreVerifiesPages(t *testing.T) {
	p := start(t, "static", 4)
	dir := dumpKill(t, p)
	before := children()
	pid := p.pid

	t.Run("FlippedByte", func(t *testing.T) {
		c := copyTree(t, dir)
		path, v := anonPages(t, c, pid)
		pg := v.Pages[len(v.Pages)/2]
		off := int64(pg.Index)*image.PageSize + 123
		flipByte(t, path, off)
		restoreRefused(t, c, before, fmt.Sprintf("task %d: vma %s", pid, v.DirName()),
			fmt.Sprintf("page %#x", v.Start+uint64(pg.Index)*image.PageSize), "hashes to", "--no-verify-pages")
		// On purpose: restored as it is.
		rp := restoreOpts(t, c, Options{NoVerifyPages: true})
		if rp != pid {
			t.Fatalf("restored pid %d, want %d", rp, pid)
		}
		unix.Kill(rp, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(rp, &ws, 0, nil)
	})
	t.Run("HoleForAPage", func(t *testing.T) {
		c := copyTree(t, dir)
		path, v := anonPages(t, c, pid)
		pg := v.Pages[1]
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(pg.Index)*image.PageSize, image.PageSize)
		f.Close()
		if err != nil {
			t.Skipf("punch hole: %v (the test's file system cannot)", err)
		}
		restoreRefused(t, c, before, fmt.Sprintf("page %#x", v.Start+uint64(pg.Index)*image.PageSize), "hole")
	})
	t.Run("DataNotInPagemap", func(t *testing.T) {
		c := copyTree(t, dir)
		path, v := anonPages(t, c, pid)
		// The counter's zeroed MiB is a hole: write into it.
		idx := -1
		for i := 1; i < len(v.Pages); i++ {
			if v.Pages[i].Index > v.Pages[i-1].Index+1 {
				idx = int(v.Pages[i-1].Index) + 1
				break
			}
		}
		if idx < 0 {
			t.Fatal("no hole in the counter's region")
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteAt([]byte("x"), int64(idx)*image.PageSize+7)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		restoreRefused(t, c, before, fmt.Sprintf("page %#x", v.Start+uint64(idx)*image.PageSize), "pagemap lists no page")
	})
	t.Run("PagemapGarbled", func(t *testing.T) {
		c := copyTree(t, dir)
		path, _ := anonPages(t, c, pid)
		pm := filepath.Join(filepath.Dir(path), "pagemap")
		if err := os.WriteFile(pm, []byte("0x1 zz\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		restoreRefused(t, c, before, pm, "line 1")
	})
	t.Run("PagemapMissing", func(t *testing.T) {
		c := copyTree(t, dir)
		path, _ := anonPages(t, c, pid)
		pm := filepath.Join(filepath.Dir(path), "pagemap")
		os.Remove(pm)
		restoreRefused(t, c, before, pm, "no such file")
	})
	t.Run("PagesFIFO", func(t *testing.T) {
		c := copyTree(t, dir)
		path, _ := anonPages(t, c, pid)
		os.Remove(path)
		if err := unix.Mkfifo(path, 0o644); err != nil {
			t.Fatal(err)
		}
		restoreRefused(t, c, before, path, "is a FIFO, not a regular file")
	})
	t.Run("RestoresAfterAll", func(t *testing.T) {
		rp := restore(t, dir)
		p.waitTicks(t, 2)
		checkSame(t, dir, rp)
	})
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestReadPagemap(t *testing.T) {
	v := &image.VMA{Start: 0x10000, End: 0x14000}
	h := strings.Repeat("ab", 32)
	dir := t.TempDir()
	for _, tc := range []struct {
		text string
		want string // error part; "" is fine
		n    int
	}{
		{"", "", 0},
		{"0x10000 " + h + "\n0x12000 " + h + "\n", "", 2},
		{"0x12000 " + h + "\n0x10000 " + h + "\n", "not ascending", 0},
		{"0x14000 " + h + "\n", "outside the vma", 0},
		{"0x10001 " + h + "\n", "not page aligned", 0},
		{"0x10000 " + h[:10] + "\n", "bad hash", 0},
		{"0x10000\n", "want", 0},
		{"zz " + h + "\n", "bad address", 0},
		{strings.Repeat("x", 100<<10), "too long", 0},
	} {
		path := filepath.Join(dir, strconv.Itoa(len(tc.text)))
		os.WriteFile(path, []byte(tc.text), 0o644)
		refs, err := readPagemap(path, v)
		if tc.want == "" {
			if err != nil || len(refs) != tc.n {
				t.Errorf("%q: %d refs, %v; want %d", tc.text, len(refs), err, tc.n)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.text[:min(40, len(tc.text))], err, tc.want)
		}
	}
}

func TestOpenTreeFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := image.OpenTreeFile(fifo); err == nil || !strings.Contains(err.Error(), "a FIFO") {
		t.Fatalf("FIFO: %v", err)
	}
	if _, err := image.OpenTreeFile("/dev/null"); err == nil || !strings.Contains(err.Error(), "a character device") {
		t.Fatalf("/dev/null: %v", err)
	}
	if _, err := image.OpenTreeFile(dir); err == nil || !strings.Contains(err.Error(), "a directory") {
		t.Fatalf("directory: %v", err)
	}
	if _, err := image.OpenTreeFile(filepath.Join(dir, "none")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("missing: %v", err)
	}
	reg := filepath.Join(dir, "reg")
	os.WriteFile(reg, []byte("x"), 0o600)
	f, err := image.OpenTreeFile(reg)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}
