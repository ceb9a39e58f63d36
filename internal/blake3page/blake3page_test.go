package blake3page

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// testPages returns n pages: random ones, and among them the edge cases
// (all zero, all 0xff, one byte set at each chunk boundary).
func testPages(n int, seed uint64) [][]byte {
	r := rand.New(rand.NewPCG(seed, 1))
	pages := make([][]byte, n)
	for i := range pages {
		p := make([]byte, PageSize)
		switch i % 6 {
		case 0:
			// all zero
		case 1:
			for j := range p {
				p[j] = 0xff
			}
		case 2:
			p[r.IntN(4)*chunkSize+r.IntN(2)*(chunkSize-1)] = byte(1 + r.IntN(255))
		default:
			for j := range p {
				p[j] = byte(r.Uint32())
			}
		}
		pages[i] = p
	}
	r.Shuffle(n, func(i, j int) { pages[i], pages[j] = pages[j], pages[i] })
	return pages
}

func checkSum(t *testing.T, pages [][]byte) {
	t.Helper()
	got := make([][32]byte, len(pages))
	Sum(pages, got)
	for i, p := range pages {
		if want := blake3.Sum256(p); got[i] != want {
			t.Fatalf("%d pages: page %d: got %x, blake3.Sum256 %x", len(pages), i, got[i], want)
		}
	}
}

func TestSumMatchesBlake3(t *testing.T) {
	if !haveAVX2 {
		t.Log("no AVX2 on this CPU: the fallback is what runs")
	}
	for n := 0; n <= 17; n++ {
		checkSum(t, testPages(n, uint64(n)))
	}
	checkSum(t, testPages(1000, 99))
}

// TestSumEveryByte flips each byte position of a page in turn: every
// byte of every chunk and block reaches the hash (a wrong transposition
// or message schedule would leave some lane's words out).
func TestSumEveryByte(t *testing.T) {
	base := testPages(8, 7)
	for pos := 0; pos < PageSize; pos += 13 {
		pages := make([][]byte, 8)
		for i := range pages {
			pages[i] = bytes.Clone(base[i])
			pages[i][(pos+i*511)%PageSize] ^= 0x5a
		}
		checkSum(t, pages)
	}
}

// TestSumUnaligned hashes pages at odd addresses, inside one buffer.
func TestSumUnaligned(t *testing.T) {
	buf := make([]byte, 9*PageSize+7)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	pages := make([][]byte, 9)
	for i := range pages {
		pages[i] = buf[3+i*PageSize : 3+(i+1)*PageSize]
	}
	checkSum(t, pages)
}

func TestSumFallback(t *testing.T) {
	if !haveAVX2 {
		t.Skip("no AVX2: TestSumMatchesBlake3 checks the fallback")
	}
	setAVX2(false)
	defer setAVX2(true)
	checkSum(t, testPages(11, 5))
}

func TestSumBadInput(t *testing.T) {
	for name, f := range map[string]func(){
		"short page": func() { Sum([][]byte{make([]byte, 100)}, make([][32]byte, 1)) },
		"counts":     func() { Sum(testPages(2, 1), make([][32]byte, 1)) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func benchPages(n int) [][]byte {
	pages := make([][]byte, n)
	buf := make([]byte, n*PageSize)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	for i := range pages {
		pages[i] = buf[i*PageSize : (i+1)*PageSize]
	}
	return pages
}

// threadCPU is the CPU time the calling thread has used.
func threadCPU(b *testing.B) float64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatal(err)
	}
	return float64(ts.Nano()) / 1e9
}

// benchHash runs hash(i) b.N times, 1 MiB each, and reports besides the
// wall-clock MB/s the MB per second of the thread's CPU time
// ("MB/cpu-s"): on a machine shared with other work, that is the figure
// that stays put.
func benchHash(b *testing.B, hash func(i int)) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	hash(0)
	b.SetBytes(256 * PageSize)
	b.ResetTimer()
	c0 := threadCPU(b)
	for i := range b.N {
		hash(i)
	}
	b.ReportMetric(float64(b.N)*256*PageSize/1e6/(threadCPU(b)-c0), "MB/cpu-s")
}

// The warm benchmarks hash the same 256 pages (1 MiB, in the cache) each
// round; the Cold ones 1 MiB a round out of 256 MiB, more than the caches
// hold, as a dump does: the pages come from memory.
var warmPages, coldPages [][]byte

func warm(int) [][]byte {
	if warmPages == nil {
		warmPages = benchPages(256)
	}
	return warmPages
}

func cold(i int) [][]byte {
	if coldPages == nil {
		coldPages = benchPages(65536)
	}
	at := (i * 256) % len(coldPages)
	return coldPages[at : at+256]
}

// BenchmarkSum256* are the page-at-a-time baseline
// (github.com/zeebo/blake3), BenchmarkSumBatch* this package.
func BenchmarkSum256(b *testing.B)       { benchSum256(b, warm) }
func BenchmarkSumBatch(b *testing.B)     { benchBatch(b, warm) }
func BenchmarkSum256Cold(b *testing.B)   { benchSum256(b, cold) }
func BenchmarkSumBatchCold(b *testing.B) { benchBatch(b, cold) }

// BenchmarkKernel* run the batch benchmarks once per kernel, AVX2 and
// (where the CPU has it) AVX-512, in the same run.
func BenchmarkKernel(b *testing.B)     { benchKernels(b, warm) }
func BenchmarkKernelCold(b *testing.B) { benchKernels(b, cold) }

func benchKernels(b *testing.B, pages func(int) [][]byte) {
	if !haveAVX2 {
		b.Skip("no AVX2")
	}
	was := setAVX512(false)
	defer setAVX512(was)
	b.Run("avx2", func(b *testing.B) { benchBatch(b, pages) })
	if hasAVX512() {
		setAVX512(true)
		b.Run("avx512", func(b *testing.B) { benchBatch(b, pages) })
	}
}

func benchSum256(b *testing.B, pages func(int) [][]byte) {
	benchHash(b, func(i int) {
		for _, p := range pages(i) {
			_ = blake3.Sum256(p)
		}
	})
}

func benchBatch(b *testing.B, pages func(int) [][]byte) {
	out := make([][32]byte, 256)
	benchHash(b, func(i int) { Sum(pages(i), out) })
}

// kernels runs f once per SIMD kernel this CPU has (AVX2, and AVX-512
// where present), with Sum set to use that kernel.
func kernels(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	if !haveAVX2 {
		t.Skip("no AVX2: TestSumMatchesBlake3 checks the fallback")
	}
	was := setAVX512(false)
	defer setAVX512(was)
	t.Run("avx2", f)
	if !hasAVX512() {
		t.Log("no AVX-512 on this CPU: only the AVX2 kernels are checked")
		return
	}
	setAVX512(true)
	t.Run("avx512", f)
}

// TestKernelsRandomBatches checks each kernel against blake3.Sum256 on
// batches of 1 to 40 pages (every ragged tail of both lane counts) and a
// long run, the pages random and at random offsets within one buffer.
func TestKernelsRandomBatches(t *testing.T) {
	kernels(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(11, 12))
		for n := 1; n <= 40; n++ {
			for rep := range 3 {
				checkSum(t, testPages(n, uint64(100*n+rep)))
			}
			buf := make([]byte, n*PageSize+64)
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
			off := r.IntN(64)
			pages := make([][]byte, n)
			for i := range pages {
				pages[i] = buf[off+i*PageSize : off+(i+1)*PageSize]
			}
			checkSum(t, pages)
		}
		checkSum(t, testPages(1003, 98))
	})
}

// TestKernelsEveryByte is TestSumEveryByte for each kernel, 16 pages.
func TestKernelsEveryByte(t *testing.T) {
	kernels(t, func(t *testing.T) {
		base := testPages(16, 8)
		for pos := 0; pos < PageSize; pos += 7 {
			pages := make([][]byte, 16)
			for i := range pages {
				pages[i] = bytes.Clone(base[i])
				pages[i][(pos+i*257)%PageSize] ^= 0xa5
			}
			checkSum(t, pages)
		}
	})
}

// FuzzSum hashes n (1-40) pages drawn from the fuzzer's bytes with the
// kernel Sum picks by default and compares with blake3.Sum256.
func FuzzSum(f *testing.F) {
	f.Add(uint8(1), []byte("a"))
	f.Add(uint8(17), []byte{0, 1, 2, 3, 255})
	f.Add(uint8(40), bytes.Repeat([]byte{0x5a}, 5000))
	f.Fuzz(func(t *testing.T, n uint8, seed []byte) {
		k := 1 + int(n)%40
		pages := make([][]byte, k)
		for i := range pages {
			p := make([]byte, PageSize)
			for j := range p {
				if len(seed) > 0 {
					p[j] = seed[(i*PageSize+j)%len(seed)] ^ byte(i)
				}
			}
			pages[i] = p
		}
		checkSum(t, pages)
	})
}
