// Package blake3page hashes 4 KiB pages with BLAKE3-256, many at a time.
//
// A page is four BLAKE3 chunks, so a one-page-at-a-time hasher such as
// github.com/zeebo/blake3 fills only four of the eight 32-bit lanes of an
// AVX2 register and pays its call and buffer overhead per page. Sum hashes
// pages in batches of eight: the 32 chunks of eight pages go through the
// compression function eight at a time, each lane with its own chunk
// counter, and then the 16 parent nodes and the 8 roots, again eight at a
// time. The result is the BLAKE3-256 hash of each page, byte for byte what
// blake3.Sum256 gives (the tests check it). Where the CPU has AVX-512F
// (and the OS enables the ZMM state), Sum hashes 16 pages at a time
// instead, 16 lanes in ZMM registers with native rotates: on an AMD EPYC
// (Zen 4) that is ~1.4x the AVX2 kernels per CPU-second (BenchmarkKernel*).
// Without AVX2 (or built with the purego tag) Sum hashes page by page with
// github.com/zeebo/blake3.
package blake3page

import (
	"fmt"

	"github.com/zeebo/blake3"
)

// PageSize is the size of the pages Sum hashes.
const PageSize = 4096

const (
	chunkSize = 1024
	// BLAKE3 domain flags
	flagChunkStart = 1 << 0
	flagChunkEnd   = 1 << 1
	flagParent     = 1 << 2
	flagRoot       = 1 << 3
)

// Sum sets out[i] to the BLAKE3-256 hash of pages[i], which must be
// PageSize bytes long; len(out) must be len(pages).
func Sum[H ~[32]byte](pages [][]byte, out []H) {
	if len(out) != len(pages) {
		panic(fmt.Sprintf("blake3page: %d pages but %d hashes", len(pages), len(out)))
	}
	for i, p := range pages {
		if len(p) != PageSize {
			panic(fmt.Sprintf("blake3page: page %d is %d bytes", i, len(p)))
		}
	}
	if !haveAVX2 {
		sumGeneric(pages, out)
		return
	}
	if useAVX512 {
		for len(pages) > 0 {
			n := min(len(pages), 16)
			sum16(pages[:n], out[:n], pages[n:])
			pages, out = pages[n:], out[n:]
		}
		return
	}
	for len(pages) > 0 {
		n := min(len(pages), 8)
		sum8(pages[:n], out[:n], pages[n:])
		pages, out = pages[n:], out[n:]
	}
}

// sumGeneric hashes page by page.
func sumGeneric[H ~[32]byte](pages [][]byte, out []H) {
	for i, p := range pages {
		out[i] = H(blake3.Sum256(p))
	}
}
