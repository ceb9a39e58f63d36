package dedup

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ckptfs/ckptfs/image"
	"golang.org/x/sys/unix"
)

// distinctMemory returns size bytes of distinct non-zero pages in an
// anonymous mapping (page-aligned, as a dump's chunk buffers are).
func distinctMemory(b *testing.B, size int) []byte {
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Munmap(mem) })
	for i := 0; i < size; i += image.PageSize {
		for j := 0; j < image.PageSize; j += 512 {
			binary.LittleEndian.PutUint64(mem[i+j:], uint64(i+j)*0x9e3779b97f4a7c15+1)
		}
	}
	return mem
}

// BenchmarkPut1GiB stores 1 GiB of distinct pages in a fresh store the
// way a dump does (one worker per CPU, each hashing a 1 MiB chunk, then
// Missing and PutPages, then the next chunk; seal at the end, as Commit
// does) and writes the same bytes to a file with O_DIRECT, 1 MiB a write,
// one writer, then fsync (raw), in alternating order: x-raw is put time /
// raw time, put-cpu-s the process's CPU time during the put.
func BenchmarkPut1GiB(b *testing.B) {
	const size = 1 << 30
	const chunk = 256
	mem := distinctMemory(b, size)
	var put, raw, cpu time.Duration
	var minflt int64
	doPut := func(dir string) {
		s, err := Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		next := make(chan int, 2*runtime.NumCPU())
		go func() {
			for off := 0; off < size; off += chunk * image.PageSize {
				next <- off
			}
			close(next)
		}()
		var wg sync.WaitGroup
		c0, f0 := cpuTime(), minFaults()
		t0 := time.Now()
		for range runtime.NumCPU() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pages := make([][]byte, chunk)
				hashes := make([]image.Hash, chunk)
				for off := range next {
					for k := range pages {
						pages[k] = mem[off+k*image.PageSize : off+(k+1)*image.PageSize]
					}
					SumPages(pages, hashes)
					miss, err := s.Missing(hashes)
					if err != nil {
						b.Error(err)
						return
					}
					hs, ps := hashes[:0:0], pages[:0:0]
					for k, m := range miss {
						if m {
							hs, ps = append(hs, hashes[k]), append(ps, pages[k])
						}
					}
					if _, err := s.PutPages(hs, ps); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := s.seal(); err != nil {
			b.Fatal(err)
		}
		put += time.Since(t0)
		cpu += cpuTime() - c0
		minflt += minFaults() - f0
	}
	doRaw := func(dir string) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		fd, err := unix.Open(filepath.Join(dir, "raw"), unix.O_WRONLY|unix.O_CREAT|unix.O_DIRECT|unix.O_CLOEXEC, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(fd)
		t0 := time.Now()
		for off := 0; off < size; off += chunk * image.PageSize {
			if _, err := unix.Pwrite(fd, mem[off:off+chunk*image.PageSize], int64(off)); err != nil {
				b.Fatal(err)
			}
		}
		if err := syscall.Fsync(fd); err != nil {
			b.Fatal(err)
		}
		raw += time.Since(t0)
	}
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(b.TempDir(), fmt.Sprint(i))
		if i%2 == 0 {
			doPut(filepath.Join(dir, "store"))
			doRaw(filepath.Join(dir, "raw"))
		} else {
			doRaw(filepath.Join(dir, "raw"))
			doPut(filepath.Join(dir, "store"))
		}
		os.RemoveAll(dir)
	}
	b.ReportMetric(put.Seconds()/float64(b.N), "put-s")
	b.ReportMetric(raw.Seconds()/float64(b.N), "raw-s")
	b.ReportMetric(put.Seconds()/raw.Seconds(), "x-raw")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "put-cpu-s")
	b.ReportMetric(float64(minflt)/float64(b.N), "put-minflt")
}

// cpuTime is the CPU time (user and system) of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// minFaults is the minor page faults of this process so far (each a fresh
// page touched: ~10 us of CPU on the benchmark VM).
func minFaults() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Minflt
}
