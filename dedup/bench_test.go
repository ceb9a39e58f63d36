package dedup

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/image"
	badger "github.com/dgraph-io/badger/v4"
	"github.com/zeebo/blake3"
)

// Run with: go test -run - -bench . -benchtime 1x ./dedup/
// CKPTFS_BENCH_MB sets the amount of page data (default 1024).

func BenchmarkSumBLAKE3(b *testing.B) {
	p := page(1, 1)
	b.SetBytes(image.PageSize)
	for b.Loop() {
		_ = blake3.Sum256(p)
	}
}

func BenchmarkSumSHA256(b *testing.B) {
	p := page(1, 1)
	b.SetBytes(image.PageSize)
	for b.Loop() {
		_ = sha256.Sum256(p)
	}
}

func BenchmarkIsZero(b *testing.B) {
	p := make([]byte, image.PageSize)
	b.SetBytes(image.PageSize)
	for b.Loop() {
		if !IsZero(p) {
			b.Fatal("not zero")
		}
	}
}

// workload is a stream of distinct random pages: a 64 MiB random pool,
// each page stamped with its number so that no two pages are equal.
type workload struct {
	pool   []byte
	hashes []image.Hash
}

const poolPages = 16384

func newWorkload(b *testing.B) *workload {
	mb := 1024
	if s := os.Getenv("CKPTFS_BENCH_MB"); s != "" {
		mb, _ = strconv.Atoi(s)
	}
	w := &workload{pool: make([]byte, poolPages*image.PageSize)}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < len(w.pool); i += 8 {
		binary.LittleEndian.PutUint64(w.pool[i:], r.Uint64())
	}
	n := mb << 20 / image.PageSize
	w.hashes = make([]image.Hash, n)
	buf := make([]byte, image.PageSize)
	for i := range n {
		w.hashes[i] = Sum(w.page(i, buf))
	}
	return w
}

func (w *workload) page(i int, dst []byte) []byte {
	j := i % poolPages
	copy(dst, w.pool[j*image.PageSize:(j+1)*image.PageSize])
	binary.LittleEndian.PutUint64(dst, uint64(i)+1)
	return dst
}

func (w *workload) bytes() int64 { return int64(len(w.hashes)) * image.PageSize }

// put stores the workload the way the dumper does: batches of 256 pages,
// Missing, then PutPages of the missing ones, from 2 workers (the dumper
// runs one a CPU).
func (w *workload) put(b *testing.B, r Repo) {
	const workers = 2
	var wg sync.WaitGroup
	for g := range workers {
		wg.Go(func() {
			batch := make([]byte, 256*image.PageSize)
			pages := make([][]byte, 0, 256)
			var hs []image.Hash
			for start := g * 256; start < len(w.hashes); start += workers * 256 {
				end := min(start+256, len(w.hashes))
				miss, err := r.Missing(w.hashes[start:end])
				if err != nil {
					b.Error(err)
					return
				}
				pages, hs = pages[:0], hs[:0]
				for i := start; i < end; i++ {
					if miss[i-start] {
						k := len(pages)
						pages = append(pages, w.page(i, batch[k*image.PageSize:(k+1)*image.PageSize]))
						hs = append(hs, w.hashes[i])
					}
				}
				if _, err := r.PutPages(hs, pages); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// writeFileSync is writeFile followed by an fsync, timed apart.
func (w *workload) writeFileSync(b *testing.B, path string) (write, sync time.Duration) {
	write = w.writeFile(b, path)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	t0 := time.Now()
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return write, time.Since(t0)
}

// writeFile writes the same bytes to a plain file, 1 MiB per write.
func (w *workload) writeFile(b *testing.B, path string) time.Duration {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	batch := make([]byte, 256*image.PageSize)
	t0 := time.Now()
	for start := 0; start < len(w.hashes); start += 256 {
		end := min(start+256, len(w.hashes))
		for i := start; i < end; i++ {
			w.page(i, batch[(i-start)*image.PageSize:(i-start+1)*image.PageSize])
		}
		if _, err := f.Write(batch[:(end-start)*image.PageSize]); err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(t0)
}

// benchOptions are the Badger settings compared (the index only since
// format 3: pages are in packs).
var benchOptions = []struct {
	name string
	opts func(string) badger.Options
}{
	{"index", storeOptions},
}

func withOptions(b *testing.B, f func(b *testing.B)) {
	for _, o := range benchOptions {
		b.Run("opts="+o.name, func(b *testing.B) {
			defer func(old func(string) badger.Options) { badgerOptions = old }(badgerOptions)
			badgerOptions = o.opts
			f(b)
		})
	}
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

// BenchmarkPutPages stores the workload in a fresh store (dumper-like
// batches) and writes the same bytes to a plain file in the same directory;
// x-file is store time / file time.
func BenchmarkPutPages(b *testing.B) {
	w := newWorkload(b)
	withOptions(b, func(b *testing.B) {
		var put, file, sync, fileSync time.Duration
		var disk int64
		for i := 0; i < b.N; i++ {
			dir := filepath.Join(b.TempDir(), fmt.Sprint(i))
			s, err := Open(dir)
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			w.put(b, s)
			put += time.Since(t0)
			t0 = time.Now()
			if err := s.seal(); err != nil { // what Commit does first
				b.Fatal(err)
			}
			if err := s.db.Sync(); err != nil {
				b.Fatal(err)
			}
			sync += time.Since(t0)
			disk = diskUsage(dir)
			s.Close()
			d, fs := w.writeFileSync(b, filepath.Join(dir, "plain"))
			file += d
			fileSync += fs
			os.RemoveAll(dir)
		}
		n := w.bytes() * int64(b.N)
		b.ReportMetric(mbps(n, put), "put-MB/s")
		b.ReportMetric(mbps(n, file), "file-MB/s")
		b.ReportMetric(put.Seconds()/file.Seconds(), "x-file")
		b.ReportMetric(sync.Seconds()/float64(b.N), "sync-s")
		b.ReportMetric(fileSync.Seconds()/float64(b.N), "file-sync-s")
		b.ReportMetric((put+sync).Seconds()/(file+fileSync).Seconds(), "x-file-synced")
		b.ReportMetric(float64(disk)/float64(w.bytes()), "disk/data")
	})
}

// BenchmarkPutPagesClient is BenchmarkPutPages through the unix socket
// (what `ckptfs dump` does while the store is mounted).
func BenchmarkPutPagesClient(b *testing.B) {
	w := newWorkload(b)
	var put, file time.Duration
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(b.TempDir(), fmt.Sprint(i))
		s, err := Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := contextWithCancel()
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx, nil) }()
		var c *Client
		for c == nil {
			c, _ = Dial(dir)
			time.Sleep(time.Millisecond)
		}
		t0 := time.Now()
		w.put(b, c)
		put += time.Since(t0)
		c.Close()
		cancel()
		<-done
		s.Close()
		file += w.writeFile(b, filepath.Join(dir, "plain"))
		os.RemoveAll(dir)
	}
	n := w.bytes() * int64(b.N)
	b.ReportMetric(mbps(n, put), "put-MB/s")
	b.ReportMetric(mbps(n, file), "file-MB/s")
	b.ReportMetric(put.Seconds()/file.Seconds(), "x-file")
}

// BenchmarkReadPage reads every page of the workload back by hash, in dump
// order, one page per ReadPage call and 256 per ReadPages call, and copies
// the same bytes with memcpy and with pread of 4 KiB from a plain file
// (page cache), the latter also followed by a BLAKE3 of each page (what a
// checked read must do at least), in the same run; x-* are the ratios.
func BenchmarkReadPage(b *testing.B) {
	w := newWorkload(b)
	withOptions(b, func(b *testing.B) {
		dir := b.TempDir()
		s, err := Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		w.put(b, s)
		if os.Getenv("CKPTFS_BENCH_REOPEN") != "" {
			s.Close()
			if s, err = Open(dir); err != nil {
				b.Fatal(err)
			}
		}
		defer s.Close()
		plain := filepath.Join(dir, "plain")
		w.writeFile(b, plain)
		f, err := os.Open(plain)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, image.PageSize)
		batch := make([]byte, 256*image.PageSize)
		var read, batched, mem, pread, preadHash time.Duration
		b.ResetTimer()
		for range b.N {
			t0 := time.Now()
			for _, h := range w.hashes {
				if err := s.ReadPage(h, buf); err != nil {
					b.Fatal(err)
				}
			}
			read += time.Since(t0)
			t0 = time.Now()
			for start := 0; start < len(w.hashes); start += 256 {
				hs := w.hashes[start:min(start+256, len(w.hashes))]
				if err := s.ReadPages(hs, batch[:len(hs)*image.PageSize]); err != nil {
					b.Fatal(err)
				}
			}
			batched += time.Since(t0)
			t0 = time.Now()
			for i := range w.hashes {
				w.page(i, buf)
			}
			mem += time.Since(t0)
			t0 = time.Now()
			for i := range w.hashes {
				if _, err := f.ReadAt(buf, int64(i)*image.PageSize); err != nil {
					b.Fatal(err)
				}
			}
			pread += time.Since(t0)
			t0 = time.Now()
			for i := range w.hashes {
				if _, err := f.ReadAt(buf, int64(i)*image.PageSize); err != nil {
					b.Fatal(err)
				}
				Sum(buf)
			}
			preadHash += time.Since(t0)
		}
		n := w.bytes() * int64(b.N)
		b.ReportMetric(batched.Seconds()/preadHash.Seconds(), "x-pread+hash-batched")
		b.ReportMetric(read.Seconds()/preadHash.Seconds(), "x-pread+hash")
		b.ReportMetric(mbps(n, read), "read-MB/s")
		b.ReportMetric(mbps(n, batched), "readpages-MB/s")
		b.ReportMetric(batched.Seconds()/pread.Seconds(), "x-pread-batched")
		b.ReportMetric(mbps(n, mem), "memcpy-MB/s")
		b.ReportMetric(mbps(n, pread), "pread-MB/s")
		b.ReportMetric(read.Seconds()/mem.Seconds(), "x-memcpy")
		b.ReportMetric(read.Seconds()/pread.Seconds(), "x-pread")
	})
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

// BenchmarkMissing asks Missing about every page of a stored workload, in
// dumper batches of 256 (what a second dump of an unchanged process does),
// and copies the same bytes with memcpy in the same run; x-memcpy is the
// ratio. "unknown" asks about hashes the store does not have (a first dump).
func BenchmarkMissing(b *testing.B) {
	w := newWorkload(b)
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	w.put(b, s)
	unknown := make([]image.Hash, len(w.hashes))
	for i, h := range w.hashes {
		unknown[i] = h
		unknown[i][31] ^= 0xff
	}
	for _, tc := range []struct {
		name   string
		hashes []image.Hash
		want   bool
	}{{"known", w.hashes, false}, {"unknown", unknown, true}} {
		b.Run(tc.name, func(b *testing.B) {
			buf := make([]byte, image.PageSize)
			var look, mem time.Duration
			for range b.N {
				t0 := time.Now()
				for start := 0; start < len(tc.hashes); start += 256 {
					miss, err := s.Missing(tc.hashes[start:min(start+256, len(tc.hashes))])
					if err != nil {
						b.Fatal(err)
					}
					if miss[0] != tc.want {
						b.Fatalf("missing = %v, want %v", miss[0], tc.want)
					}
				}
				look += time.Since(t0)
				t0 = time.Now()
				for i := range w.hashes {
					w.page(i, buf)
				}
				mem += time.Since(t0)
			}
			n := float64(len(tc.hashes) * b.N)
			b.ReportMetric(float64(look.Nanoseconds())/n, "ns/lookup")
			b.ReportMetric(look.Seconds()/mem.Seconds(), "x-memcpy")
		})
	}
}

// BenchmarkOpen reopens a store holding the workload: open-ms is Open,
// index-ms the page index load done by the first Missing (key-only scan),
// x-memcpy the sum against a memcpy of the stored bytes in the same run.
func BenchmarkOpen(b *testing.B) {
	w := newWorkload(b)
	dir := b.TempDir()
	s, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	w.put(b, s)
	s.Close()
	buf := make([]byte, image.PageSize)
	var open, index, mem time.Duration
	for range b.N {
		t0 := time.Now()
		s, err := Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		open += time.Since(t0)
		t0 = time.Now()
		if _, err := s.Missing(w.hashes[:1]); err != nil {
			b.Fatal(err)
		}
		index += time.Since(t0)
		s.Close()
		t0 = time.Now()
		for i := range w.hashes {
			w.page(i, buf)
		}
		mem += time.Since(t0)
	}
	b.ReportMetric(open.Seconds()*1000/float64(b.N), "open-ms")
	b.ReportMetric(index.Seconds()*1000/float64(b.N), "index-ms")
	b.ReportMetric((open+index).Seconds()/mem.Seconds(), "x-memcpy")
}

// BenchmarkReadPageRandom reads every page of a reopened 256 MiB store in
// random order, one page per call, from 2 goroutines (FUSE read handlers
// run concurrently); x-pread compares with pread of the same pages from a
// plain file (page cache) by 2 goroutines in the same run.
func BenchmarkReadPageRandom(b *testing.B) {
	b.Setenv("CKPTFS_BENCH_MB", "256")
	w := newWorkload(b)
	withOptions(b, func(b *testing.B) {
		dir := b.TempDir()
		s, err := Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		w.put(b, s)
		s.Close()
		if s, err = Open(dir); err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		plain := filepath.Join(dir, "plain")
		w.writeFile(b, plain)
		f, err := os.Open(plain)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		order := rand.New(rand.NewPCG(7, 8)).Perm(len(w.hashes))
		// par runs f on every page, b.N times, from 2 goroutines; it returns the time.
		par := func(f func(i int, buf []byte) error) time.Duration {
			t0 := time.Now()
			var wg sync.WaitGroup
			for g := range 2 {
				wg.Go(func() {
					buf := make([]byte, image.PageSize)
					for i := g; i < b.N*len(order); i += 2 {
						if err := f(order[i%len(order)], buf); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			return time.Since(t0)
		}
		b.ResetTimer()
		read := par(func(i int, buf []byte) error { return s.ReadPage(w.hashes[i], buf) })
		b.StopTimer()
		pread := par(func(i int, buf []byte) error {
			_, err := f.ReadAt(buf, int64(i)*image.PageSize)
			return err
		})
		b.ReportMetric(float64(read.Nanoseconds())/float64(b.N*len(order)), "ns/page")
		b.ReportMetric(read.Seconds()/pread.Seconds(), "x-pread")
	})
}
