package dedup

import (
	"os"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/image"
)

// BenchmarkRestoreRead reads every page of the workload (CKPTFS_BENCH_MB,
// default 1 GiB) back in 4 MiB batches from four goroutines, as a restore
// from a mount does: with Store.ReadPages in the store's process (the
// baseline), with Client.ReadPages over the store's socket (the page data
// in the replies) and with a PackReader (the client reads the packs
// itself), page cache warm, and the PackReader again cold (every page
// cache dropped, as root) against `cat`-like reads of the pack files
// cold, in the same run. x-* are the ratios to the baseline (warm) and to
// the packs (cold).
func BenchmarkRestoreRead(b *testing.B) {
	w := newWorkload(b)
	dir := b.TempDir()
	s, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	w.put(b, s)
	if err := s.seal(); err != nil {
		b.Fatal(err)
	}
	c := serveB(b, s)
	r, err := NewPackReader(c)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	const batch = 1024 // pages: 4 MiB, the restorer's chunk
	read := func(f func([]image.Hash, []byte) error) time.Duration {
		t0 := time.Now()
		work := make(chan int)
		done := make(chan error, 4)
		for range 4 {
			go func() {
				buf := make([]byte, batch*image.PageSize)
				var err error
				for i := range work {
					h := w.hashes[i:min(i+batch, len(w.hashes))]
					if e := f(h, buf[:len(h)*image.PageSize]); e != nil && err == nil {
						err = e
					}
				}
				done <- err
			}()
		}
		for i := 0; i < len(w.hashes); i += batch {
			work <- i
		}
		close(work)
		for range 4 {
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(t0)
	}
	root := os.Getuid() == 0
	var tStore, tSocket, tDirect, tPacksCold, tDirectCold time.Duration
	b.ResetTimer()
	for range b.N {
		tStore += read(s.ReadPages)
		tSocket += read(c.ReadPages)
		tDirect += read(r.ReadPages)
		if root {
			dropCaches(b)
			tPacksCold += catPacks(b, dir)
			dropCaches(b)
			tDirectCold += read(r.ReadPages)
		}
	}
	b.StopTimer()
	n := w.bytes() * int64(b.N)
	b.ReportMetric(mbps(n, tStore), "store-MB/s")
	b.ReportMetric(mbps(n, tSocket), "socket-MB/s")
	b.ReportMetric(mbps(n, tDirect), "packreader-MB/s")
	b.ReportMetric(tSocket.Seconds()/tStore.Seconds(), "x-socket")
	b.ReportMetric(tDirect.Seconds()/tStore.Seconds(), "x-packreader")
	if root {
		b.ReportMetric(mbps(n, tDirectCold), "packreader-cold-MB/s")
		b.ReportMetric(tDirectCold.Seconds()/tPacksCold.Seconds(), "x-packreader-cold/packs")
	}
}

// serveB serves s on its socket for the benchmark and dials it.
func serveB(b *testing.B, s *Store) *Client {
	ctx, cancel := contextWithCancel()
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, nil) }()
	b.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if c, err := Dial(s.Dir()); err == nil {
			b.Cleanup(func() { c.Close() })
			return c
		}
	}
	b.Fatal("store socket not up after 5s")
	return nil
}

// dropCaches writes back and drops the kernel's page cache (root).
func dropCaches(b *testing.B) {
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
		b.Fatalf("drop caches: %v", err)
	}
}

// catPacks reads every pack file of the store in dir once, 128 KiB at a
// time (as cat does), and returns how long it took.
func catPacks(b *testing.B, dir string) time.Duration {
	ents, err := os.ReadDir(dir + "/" + packDir)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 128<<10)
	t0 := time.Now()
	for _, e := range ents {
		f, err := os.Open(dir + "/" + packDir + "/" + e.Name())
		if err != nil {
			b.Fatal(err)
		}
		for {
			n, err := f.Read(buf)
			if n == 0 || err != nil {
				break
			}
		}
		f.Close()
	}
	return time.Since(t0)
}
