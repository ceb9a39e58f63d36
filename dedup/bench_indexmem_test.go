package dedup

import (
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// BenchmarkIndexMemory adds the pages of an 8 GiB dump (2M hashes, in
// 256-page batches as PutPages does) to an empty page index and reports
// the heap it holds then (B/page, the dumper's RSS bound needs it small)
// and the time an add takes (ns/page).
func BenchmarkIndexMemory(b *testing.B) {
	const n = 2 << 20
	r := rand.New(rand.NewPCG(1, 2))
	hs := make([]image.Hash, n)
	locs := make([]packLoc, n)
	for i := range hs {
		hs[i] = randHash(r)
		locs[i] = packLoc{pack: packID(1 + i/8192), offset: int64(packHeaderSize + (i%8192)*image.PageSize), length: image.PageSize}
	}
	var perPage float64
	for i := 0; i < b.N; i++ {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		x := newPageIndex(nil, nil)
		for k := 0; k < n; k += 256 {
			x.add(hs[k:k+256], locs[k:k+256])
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		perPage = float64(m1.HeapAlloc-m0.HeapAlloc) / n
		runtime.KeepAlive(x)
	}
	b.ReportMetric(perPage, "B/page")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/page")
}
