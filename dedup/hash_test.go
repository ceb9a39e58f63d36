package dedup

import (
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

// chunkOfPages is 256 random pages, as a dump's chunk holds.
func chunkOfPages() [][]byte {
	pages := make([][]byte, 256)
	for i := range pages {
		pages[i] = page(7, uint64(i))
	}
	return pages
}

func TestSumPagesIsSum(t *testing.T) {
	pages := chunkOfPages()[:37]
	pages = append(pages, make([]byte, image.PageSize)) // a zero page too
	got := make([]image.Hash, len(pages))
	SumPages(pages, got)
	for i, p := range pages {
		if got[i] != Sum(p) {
			t.Fatalf("page %d: SumPages %x, Sum %x", i, got[i], Sum(p))
		}
	}
}

// BenchmarkSumPerPage and BenchmarkSumPages hash the same 256 pages: Sum
// page by page, and SumPages in one call (run them together to compare).
func BenchmarkSumPerPage(b *testing.B) {
	pages := chunkOfPages()
	b.SetBytes(int64(len(pages)) * image.PageSize)
	for b.Loop() {
		for _, p := range pages {
			_ = Sum(p)
		}
	}
}

func BenchmarkSumPages(b *testing.B) {
	pages := chunkOfPages()
	out := make([]image.Hash, len(pages))
	b.SetBytes(int64(len(pages)) * image.PageSize)
	for b.Loop() {
		SumPages(pages, out)
	}
}
