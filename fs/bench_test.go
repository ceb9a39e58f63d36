package fs

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

const benchVMASize = 1 << 30

// benchVMA adds a checkpoint "big" whose task has one vma of 1 GiB, every
// page saved (4096 distinct contents, cycled), and returns the vma.
func benchVMA(m *memRepo) *image.VMA {
	c := &image.Checkpoint{ID: "big", Time: t0, RootPID: 100}
	t := &image.Task{PID: 100, Comm: "big"}
	n := benchVMASize / image.PageSize
	v := &image.VMA{Start: 0x10000000, End: 0x10000000 + benchVMASize, Perms: "rw-p", Kind: image.VMAAnon}
	hashes := make([]image.Hash, 4096)
	for i := range hashes {
		hashes[i] = m.putPage(pageContent(7, i))
	}
	v.Pages = make([]image.PageRef, n)
	for i := range v.Pages {
		v.Pages[i] = image.PageRef{Index: uint32(i), Hash: hashes[i%len(hashes)]}
	}
	t.VMAs = []*image.VMA{v}
	c.Tasks = []*image.Task{t}
	m.add(c)
	return v
}

// alignedBuf returns a page-aligned buffer of n bytes (for O_DIRECT).
func alignedBuf(n int) []byte {
	b := make([]byte, n+image.PageSize)
	off := int(uintptr(unsafe.Pointer(&b[0])) & (image.PageSize - 1))
	if off != 0 {
		off = image.PageSize - off
	}
	return b[off : off+n]
}

// readAll reads f from the start with reads of len(buf) and returns the bytes read.
func readAll(f *os.File, buf []byte) (int64, error) {
	var total int64
	for {
		n, err := f.ReadAt(buf, total)
		total += int64(n)
		if err == io.EOF || n == 0 {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

// BenchmarkPagesRead reads a 1 GiB vma `pages` file through the mount with
// 1 MiB reads, cold (page cache dropped), with O_DIRECT and from the page
// cache, against a ReadPage loop over the same pages straight from the store.
// Ratios > 1 mean the mount is slower than the store by that factor.
func BenchmarkPagesRead(b *testing.B) {
	repo := newMemRepo()
	v := benchVMA(repo)
	srv := mountRepo(b, repo)
	p := filepath.Join(srv.Mountpoint(), "big", "tasks", "100", "vmas", v.DirName(), "pages")
	benchPagesRead(b, p, v, repo)
}

func benchPagesRead(b *testing.B, p string, v *image.VMA, src image.PageSource) {
	buf := alignedBuf(1 << 20)
	var tStore, tCold, tDirect, tCached time.Duration
	b.SetBytes(benchVMASize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Baseline: the store's pages, one ReadPage per page into a 1 MiB buffer.
		start := time.Now()
		for k, r := range v.Pages {
			o := (k % 256) * image.PageSize
			if err := src.ReadPage(r.Hash, buf[o:o+image.PageSize]); err != nil {
				b.Fatal(err)
			}
		}
		tStore += time.Since(start)

		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		start = time.Now()
		n, err := readAll(f, buf)
		tCold += time.Since(start)
		if err != nil || n != benchVMASize {
			b.Fatalf("cold read: %d bytes, %v", n, err)
		}
		start = time.Now()
		n, err = readAll(f, buf)
		tCached += time.Since(start)
		if err != nil || n != benchVMASize {
			b.Fatalf("cached read: %d bytes, %v", n, err)
		}
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()

		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			b.Fatal(err)
		}
		df := os.NewFile(uintptr(fd), p)
		start = time.Now()
		n, err = readAll(df, buf)
		tDirect += time.Since(start)
		df.Close()
		if err != nil || n != benchVMASize {
			b.Fatalf("direct read: %d bytes, %v", n, err)
		}
	}
	b.StopTimer()
	total := int64(b.N) * benchVMASize
	b.ReportMetric(mbps(total, tStore), "store-MB/s")
	b.ReportMetric(mbps(total, tCold), "cold-MB/s")
	b.ReportMetric(mbps(total, tDirect), "odirect-MB/s")
	b.ReportMetric(mbps(total, tCached), "cached-MB/s")
	b.ReportMetric(tCold.Seconds()/tStore.Seconds(), "cold/store")
	b.ReportMetric(tDirect.Seconds()/tStore.Seconds(), "odirect/store")
}

// BenchmarkLsR lists a 50-task checkpoint with ls -R: a new checkpoint each
// round, so the first listing is cold (it loads and renders the checkpoint),
// then again (warm: kernel caches), against ls -R of the same tree copied to
// a local directory.
func BenchmarkLsR(b *testing.B) {
	repo := newMemRepo()
	srv := mountRepo(b, repo)
	benchLsR(b, srv, func(i int) string {
		id := fmt.Sprintf("ls%d", i)
		testCheckpoint(repo, id, "", t0.Add(time.Duration(i)*time.Second), 50)
		return id
	})
}

// benchLsR runs ls -R over the checkpoint add(i) creates in round i.
func benchLsR(b *testing.B, srv *Server, add func(i int) string) {
	var tMount, tWarm, tDisk time.Duration
	entries := 0
	for i := 0; i < b.N; i++ {
		id := add(i)
		srv.Notify()
		start := time.Now()
		out, err := exec.Command("ls", "-R", filepath.Join(srv.Mountpoint(), id)).Output()
		tMount += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		entries = countLines(out)
		start = time.Now()
		if err := exec.Command("ls", "-R", filepath.Join(srv.Mountpoint(), id)).Run(); err != nil {
			b.Fatal(err)
		}
		tWarm += time.Since(start)
		if i == 0 {
			copyDir := filepath.Join(b.TempDir(), "copy")
			if out, err := exec.Command("cp", "-a", filepath.Join(srv.Mountpoint(), id), copyDir).CombinedOutput(); err != nil {
				b.Fatalf("cp -a: %v %s", err, out)
			}
			defer func() {
				start := time.Now()
				exec.Command("ls", "-R", copyDir).Run()
				tDisk = time.Since(start)
				b.ReportMetric(float64(tDisk.Microseconds())/1000, "ms/ls-R-copy")
			}()
		}
	}
	b.ReportMetric(float64(tMount.Microseconds())/1000/float64(b.N), "ms/ls-R")
	b.ReportMetric(float64(tWarm.Microseconds())/1000/float64(b.N), "ms/ls-R-warm")
	b.ReportMetric(float64(entries), "lines")
}

func countLines(b []byte) int {
	n := 0
	for _, c := range b {
		if c == '\n' {
			n++
		}
	}
	return n
}

// storeBigCheckpoint commits a checkpoint whose task has one 1 GiB vma of
// distinct pages into repo.
func storeBigCheckpoint(b testing.TB, repo dedup.Repo) (*image.Checkpoint, *image.VMA) {
	return storeVMACheckpoint(b, repo, benchVMASize/image.PageSize, nil)
}

// storeVMACheckpoint commits a checkpoint whose task has one vma of n
// pages into repo: page i is pageContent(9, i), or a hole if hole(i).
func storeVMACheckpoint(b testing.TB, repo dedup.Repo, n int, hole func(int) bool) (*image.Checkpoint, *image.VMA) {
	v := &image.VMA{Start: 0x10000000, End: 0x10000000 + uint64(n)*image.PageSize, Perms: "rw-p", Kind: image.VMAAnon}
	const batch = 1024
	hashes := make([]image.Hash, 0, batch)
	pages := make([][]byte, 0, batch)
	for i := 0; i < n; i++ {
		if hole == nil || !hole(i) {
			p := pageContent(9, i)
			h := dedup.Sum(p)
			v.Pages = append(v.Pages, image.PageRef{Index: uint32(i), Hash: h})
			hashes, pages = append(hashes, h), append(pages, p)
		}
		if len(hashes) == batch || i == n-1 && len(hashes) > 0 {
			if _, err := repo.PutPages(hashes, pages); err != nil {
				b.Fatal(err)
			}
			hashes, pages = hashes[:0], pages[:0]
		}
	}
	c := &image.Checkpoint{Name: "big", RootPID: 100, Tasks: []*image.Task{{PID: 100, Comm: "big",
		Threads: []*image.Thread{{TID: 100}}, VMAs: []*image.VMA{v}}}}
	if err := repo.Commit(c); err != nil {
		b.Fatal(err)
	}
	return c, v
}

// BenchmarkStorePagesRead is BenchmarkPagesRead over a real dedup store
// (1 GiB of distinct pages) and the real renderer.
func BenchmarkStorePagesRead(b *testing.B) {
	dir := b.TempDir()
	s, err := dedup.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	c, v := storeBigCheckpoint(b, s)
	s.Close()
	srv := mountStore(b, dir, Options{})
	p := filepath.Join(srv.Mountpoint(), c.ID, "tasks", "100", "vmas", v.DirName(), "pages")
	benchPagesRead(b, p, v, srv.root.repo)
}

// BenchmarkStoreLsR is BenchmarkLsR over a real store and the real renderer.
func BenchmarkStoreLsR(b *testing.B) {
	srv := mountStore(b, b.TempDir(), Options{})
	repo := srv.root.repo.(dedup.Repo)
	benchLsR(b, srv, func(int) string {
		c, _ := storeCheckpoint(b, repo, "", 50)
		return c.ID
	})
}

// BenchmarkStorePagesCat is the measure of the mount: `cat` of a
// 1 GiB pages file (distinct pages, real store and renderer) to /dev/null,
// against Store.ReadPages of the same pages in 1 MiB batches in the same
// process and against `cat` of the store's pack files (the issue's
// baseline), in the same run:
//   - cold: every page cache dropped (drop_caches) before each;
//   - fuse-cold: the pages file's cache dropped, the store's files cached;
//   - warm: the pages file read again from the kernel's page cache.
//
// cold/packs, cold/store and fuse-cold/store-warm > 1 say how much slower
// the mount is. The mount's read-ahead reads cold packs with O_DIRECT
// (pages.go), which leaves them out of the page cache: store-warm is
// then a read of packs the cold cat did not cache, and fuse-cold reads
// packs store-warm cached. Each round is logged (-test.v).
func BenchmarkStorePagesCat(b *testing.B) {
	if os.Getuid() != 0 {
		b.Skip("needs root (drop_caches)")
	}
	dir := b.TempDir()
	s, err := dedup.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	c, v := storeBigCheckpoint(b, s)
	s.Close()
	srv := mountStore(b, dir, Options{})
	store := srv.root.repo.(*dedup.Store)
	p := filepath.Join(srv.Mountpoint(), c.ID, "tasks", "100", "vmas", v.DirName(), "pages")
	hashes := make([]image.Hash, len(v.Pages))
	for i, r := range v.Pages {
		hashes[i] = r.Hash
	}
	buf := make([]byte, 1<<20)
	readStore := func() time.Duration {
		start := time.Now()
		for i := 0; i < len(hashes); i += len(buf) / image.PageSize {
			h := hashes[i:min(i+len(buf)/image.PageSize, len(hashes))]
			if err := store.ReadPages(h, buf[:len(h)*image.PageSize]); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	packs, err := filepath.Glob(filepath.Join(dir, "packs", "*.pack"))
	if err != nil || len(packs) == 0 {
		b.Fatalf("no packs in %s: %v", dir, err)
	}
	cat := func(p ...string) time.Duration {
		cmd := exec.Command("cat", p...)
		var errOut strings.Builder
		cmd.Stdout, cmd.Stderr = devnull, &errOut
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("cat: %v\n%s", err, errOut.String())
		}
		return time.Since(start)
	}
	dropFuse := func() {
		f, err := os.Open(p)
		if err != nil {
			b.Fatal(err)
		}
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()
	}
	var tPacksCold, tStoreCold, tCatCold, tStoreWarm, tFuseCold, tWarm time.Duration
	b.SetBytes(benchVMASize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dropAllCaches(b)
		packsCold := cat(packs...)
		dropAllCaches(b)
		storeCold := readStore()
		dropAllCaches(b)
		catCold := cat(p)
		warm := cat(p)
		storeWarm := readStore()
		dropFuse()
		fuseCold := cat(p)
		b.Logf("round %d: packs cold %.0f MB/s, store cold %.0f, cat cold %.0f (cold/packs %.3f), warm %.0f, store warm %.0f, fuse-cold %.0f",
			i, mbps(benchVMASize, packsCold), mbps(benchVMASize, storeCold), mbps(benchVMASize, catCold),
			catCold.Seconds()/packsCold.Seconds(), mbps(benchVMASize, warm), mbps(benchVMASize, storeWarm), mbps(benchVMASize, fuseCold))
		tPacksCold += packsCold
		tStoreCold += storeCold
		tCatCold += catCold
		tWarm += warm
		tStoreWarm += storeWarm
		tFuseCold += fuseCold
	}
	b.StopTimer()
	total := int64(b.N) * benchVMASize
	b.ReportMetric(mbps(total, tPacksCold), "packs-cold-MB/s")
	b.ReportMetric(mbps(total, tStoreCold), "store-cold-MB/s")
	b.ReportMetric(mbps(total, tCatCold), "cat-cold-MB/s")
	b.ReportMetric(mbps(total, tStoreWarm), "store-warm-MB/s")
	b.ReportMetric(mbps(total, tFuseCold), "cat-fuse-cold-MB/s")
	b.ReportMetric(mbps(total, tWarm), "cat-warm-MB/s")
	b.ReportMetric(tCatCold.Seconds()/tPacksCold.Seconds(), "cold/packs")
	b.ReportMetric(tCatCold.Seconds()/tStoreCold.Seconds(), "cold/store")
	b.ReportMetric(tFuseCold.Seconds()/tStoreWarm.Seconds(), "fuse-cold/store-warm")
}

// dropAllCaches writes back and drops the kernel's page cache.
func dropAllCaches(b *testing.B) {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		b.Fatalf("drop caches: %v", err)
	}
}
