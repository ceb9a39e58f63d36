package blake3page

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/zeebo/blake3"
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

// BenchmarkSum256 is the page-at-a-time baseline (github.com/zeebo/blake3).
func BenchmarkSum256(b *testing.B) {
	pages := benchPages(256)
	b.SetBytes(int64(len(pages) * PageSize))
	for b.Loop() {
		for _, p := range pages {
			_ = blake3.Sum256(p)
		}
	}
}

func BenchmarkSumBatch(b *testing.B) {
	pages := benchPages(256)
	out := make([][32]byte, len(pages))
	b.SetBytes(int64(len(pages) * PageSize))
	for b.Loop() {
		Sum(pages, out)
	}
}
