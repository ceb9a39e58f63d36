//go:build amd64 && !purego

package blake3page

import (
	"encoding/binary"

	"golang.org/x/sys/cpu"
)

//go:generate sh -c "go run gen_amd64.go > hash_amd64.s"

// haveAVX2 says the AVX2 kernels can run (a variable: the tests turn it
// off to check the fallback).
var haveAVX2 = cpu.X86.HasAVX2

// haveAVX512 says the 16-lane AVX-512 kernels can run: x/sys/cpu sets
// HasAVX512F only when the OS also enables the opmask and ZMM state
// (XCR0 bits 5-7).
var haveAVX512 = cpu.X86.HasAVX2 && cpu.X86.HasAVX512F

// useAVX512 says Sum takes the 16-lane kernels where it can.
var useAVX512 = haveAVX512 && avx512ByDefault

// chunks8 hashes eight whole chunks (1024 bytes at in[l] for lane l), lane
// l with chunk counter counters[l], and sets out[w][l] to word w of lane
// l's chaining value. It prefetches the 1024 bytes at each next[l], the
// chunks of the next call.
//
//go:noescape
func chunks8(in *[8]*byte, counters *[8]uint32, out *[8][8]uint32, next *[8]*byte)

// parents8 compresses eight 64-byte blocks (msg[w][l]: word w of lane l's
// block) with the key as chaining value, counter 0, block length 64 and
// flags, and sets out[w][l] to word w of lane l's output.
//
//go:noescape
func parents8(msg *[16][8]uint32, flags uint32, out *[8][8]uint32)

// chunks16 is chunks8 for 16 lanes (AVX-512).
//
//go:noescape
func chunks16(in *[16]*byte, counters *[16]uint32, out *[8][16]uint32, next *[16]*byte)

// parents16 is parents8 for 16 lanes (AVX-512).
//
//go:noescape
func parents16(msg *[16][16]uint32, flags uint32, out *[8][16]uint32)

// laneCounters16: lanes 4q to 4q+3 hold the four chunks of page q.
var laneCounters16 = [16]uint32{0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3}

// quadLanes points lanes 4q to 4q+3 at the chunks of page ps[min(q, len(ps)-1)].
func quadLanes(ps [][]byte) (in [16]*byte) {
	for q := range 4 {
		p := ps[min(q, len(ps)-1)]
		for c := range 4 {
			in[4*q+c] = &p[c*chunkSize]
		}
	}
	return in
}

// sum16 hashes up to 16 pages with the AVX-512 kernels, four pages per
// chunks16 call; the first pages of rest are prefetched. Lanes with no
// page of their own repeat the last page; their results are dropped.
func sum16[H ~[32]byte](pages [][]byte, out []H, rest [][]byte) {
	n := len(pages)
	var cvs [4][8][16]uint32 // per quad of pages: word, lane
	in := quadLanes(pages)
	for quad := 0; 4*quad < n; quad++ {
		next := in
		switch {
		case 4*quad+4 < n:
			next = quadLanes(pages[4*quad+4:])
		case len(rest) > 0:
			next = quadLanes(rest[:min(4, len(rest))])
		}
		chunks16(&in, &laneCounters16, &cvs[quad], &next)
		in = next
	}
	var left, right, roots [16][16]uint32
	for p := range 16 {
		q := min(p, n-1)
		cv, first := &cvs[q/4], (q%4)*4
		for w := range 8 {
			left[w][p], left[8+w][p] = cv[w][first], cv[w][first+1]
			right[w][p], right[8+w][p] = cv[w][first+2], cv[w][first+3]
		}
	}
	parents16(&left, flagParent, (*[8][16]uint32)(roots[:8]))
	parents16(&right, flagParent, (*[8][16]uint32)(roots[8:]))
	var root [8][16]uint32
	parents16(&roots, flagParent|flagRoot, &root)
	for p := range n {
		for w := range 8 {
			binary.LittleEndian.PutUint32(out[p][4*w:], root[w][p])
		}
	}
}

// laneCounters: lanes 0-3 hold the four chunks of one page, 4-7 those of
// the next.
var laneCounters = [8]uint32{0, 1, 2, 3, 0, 1, 2, 3}

// pairLanes points lanes 0-3 at the chunks of page a, 4-7 at those of b.
func pairLanes(a, b []byte) (in [8]*byte) {
	for c := range 4 {
		in[c], in[4+c] = &a[c*chunkSize], &b[c*chunkSize]
	}
	return in
}

// sum8 hashes up to eight pages; the first pages of rest, the next batch,
// are prefetched. Lanes with no page of their own repeat the last page;
// their results are dropped.
func sum8[H ~[32]byte](pages [][]byte, out []H, rest [][]byte) {
	n := len(pages)
	var cvs [4][8][8]uint32 // per pair of pages: word, lane
	in := pairLanes(pages[0], pages[min(1, n-1)])
	for pair := 0; 2*pair < n; pair++ {
		next := in
		switch {
		case 2*pair+2 < n:
			next = pairLanes(pages[2*pair+2], pages[min(2*pair+3, n-1)])
		case len(rest) > 0:
			next = pairLanes(rest[0], rest[min(1, len(rest)-1)])
		}
		chunks8(&in, &laneCounters, &cvs[pair], &next)
		in = next
	}
	// Parent nodes: lane p is page p; the left parent joins chunks 0 and
	// 1, the right one 2 and 3. Their outputs, one after the other, are
	// the roots' blocks.
	var left, right, roots [16][8]uint32
	for p := range 8 {
		q := min(p, n-1)
		cv, first := &cvs[q/2], (q%2)*4
		for w := range 8 {
			left[w][p], left[8+w][p] = cv[w][first], cv[w][first+1]
			right[w][p], right[8+w][p] = cv[w][first+2], cv[w][first+3]
		}
	}
	parents8(&left, flagParent, (*[8][8]uint32)(roots[:8]))
	parents8(&right, flagParent, (*[8][8]uint32)(roots[8:]))
	var root [8][8]uint32
	parents8(&roots, flagParent|flagRoot, &root)
	for p := range n {
		for w := range 8 {
			binary.LittleEndian.PutUint32(out[p][4*w:], root[w][p])
		}
	}
}
