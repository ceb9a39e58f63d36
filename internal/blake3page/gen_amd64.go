//go:build ignore

// gen_amd64.go writes hash_amd64.s, the AVX2 kernels of this package:
//
//	go run gen_amd64.go > hash_amd64.s
//
// The BLAKE3 compression function is written out once per kernel (7
// rounds, the message schedule resolved here), eight lanes in the eight
// 32-bit words of a YMM register: state word i of every lane is register
// Yi. The kernels are written from the BLAKE3 specification
// (https://github.com/BLAKE3-team/BLAKE3-specs), not from another
// implementation.
package main

import (
	"fmt"
	"os"
	"strings"
)

var out strings.Builder

func emit(format string, args ...any) { fmt.Fprintf(&out, format+"\n", args...) }

var iv = [8]uint32{0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19}

// permutation is BLAKE3's message permutation, applied between rounds.
var permutation = [16]int{2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8}

// schedule[r][i] is the message word round r uses where round 0 uses word i.
func schedule() [7][16]int {
	var s [7][16]int
	for i := range 16 {
		s[0][i] = i
	}
	for r := 1; r < 7; r++ {
		for i := range 16 {
			s[r][i] = s[r-1][permutation[i]]
		}
	}
	return s
}

func y(i int) string { return fmt.Sprintf("Y%d", i) }

// halfG is one half of G on four (a, b, c, d) register quadruples at once:
// a += b + m; d = (d ^ a) >>> rd; c += d; b = (b ^ c) >>> rb. rd is done
// with a byte shuffle (16, 8), rb with shifts and an or through a c
// register spilled to tmp.
func halfG(quads [4][4]int, msg [4]string, rd string, rb int, tmp string) {
	for i, q := range quads {
		emit("\tVPADDD %s, %s, %s", msg[i], y(q[0]), y(q[0]))
	}
	for _, q := range quads {
		emit("\tVPADDD %s, %s, %s", y(q[1]), y(q[0]), y(q[0]))
	}
	for _, q := range quads {
		emit("\tVPXOR %s, %s, %s", y(q[0]), y(q[3]), y(q[3]))
	}
	for _, q := range quads {
		emit("\tVPSHUFB %s, %s, %s", rd, y(q[3]), y(q[3]))
	}
	for _, q := range quads {
		emit("\tVPADDD %s, %s, %s", y(q[3]), y(q[2]), y(q[2]))
	}
	for _, q := range quads {
		emit("\tVPXOR %s, %s, %s", y(q[2]), y(q[1]), y(q[1]))
	}
	t := quads[0][2]
	emit("\tVMOVDQU %s, %s", y(t), tmp)
	for _, q := range quads {
		emit("\tVPSRLD $%d, %s, %s", rb, y(q[1]), y(t))
		emit("\tVPSLLD $%d, %s, %s", 32-rb, y(q[1]), y(q[1]))
		emit("\tVPOR %s, %s, %s", y(t), y(q[1]), y(q[1]))
	}
	emit("\tVMOVDQU %s, %s", tmp, y(t))
}

// halfGZ is halfG on ZMM registers (16 lanes): AVX-512 rotates words
// natively (VPRORD), so no shuffle masks, shifts or spill.
func halfGZ(quads [4][4]int, msg [4]string, rd, rb int) {
	z := func(i int) string { return fmt.Sprintf("Z%d", i) }
	for i, q := range quads {
		emit("\tVPADDD %s, %s, %s", msg[i], z(q[0]), z(q[0]))
	}
	for _, q := range quads {
		emit("\tVPADDD %s, %s, %s", z(q[1]), z(q[0]), z(q[0]))
	}
	for _, q := range quads {
		emit("\tVPXORD %s, %s, %s", z(q[0]), z(q[3]), z(q[3]))
	}
	for _, q := range quads {
		emit("\tVPRORD $%d, %s, %s", rd, z(q[3]), z(q[3]))
	}
	for _, q := range quads {
		emit("\tVPADDD %s, %s, %s", z(q[3]), z(q[2]), z(q[2]))
	}
	for _, q := range quads {
		emit("\tVPXORD %s, %s, %s", z(q[2]), z(q[1]), z(q[1]))
	}
	for _, q := range quads {
		emit("\tVPRORD $%d, %s, %s", rb, z(q[1]), z(q[1]))
	}
}

// rounds emits the 7 rounds on Y0-Y15; msg(k) is the operand of message
// word k (8 lanes), tmp a 32-byte scratch slot. With tmp "" the rounds
// are on Z0-Z15 (16 lanes, AVX-512).
func rounds(msg func(k int) string, tmp string) {
	columns := [4][4]int{{0, 4, 8, 12}, {1, 5, 9, 13}, {2, 6, 10, 14}, {3, 7, 11, 15}}
	diagonals := [4][4]int{{0, 5, 10, 15}, {1, 6, 11, 12}, {2, 7, 8, 13}, {3, 4, 9, 14}}
	for r, s := range schedule() {
		emit("\t// round %d", r)
		for step, quads := range [2][4][4]int{columns, diagonals} {
			var mx, my [4]string
			for i := range 4 {
				g := step*4 + i
				mx[i], my[i] = msg(s[2*g]), msg(s[2*g+1])
			}
			if tmp == "" {
				halfGZ(quads, mx, 16, 12)
				halfGZ(quads, my, 8, 7)
				continue
			}
			halfG(quads, mx, "rot16<>(SB)", 12, tmp)
			halfG(quads, my, "rot8<>(SB)", 7, tmp)
		}
	}
}

// initState loads Y8-Y15 for a compression: IV words 0-3, the counter
// (low words from counterLow, high words 0), the block length and flags
// (broadcast from flags).
func initState(counterLow, flags string) {
	for i := range 4 {
		emit("\tVPBROADCASTD iv<>+%d(SB), Y%d", 4*i, 8+i)
	}
	if counterLow == "" {
		emit("\tVPXOR Y12, Y12, Y12")
	} else {
		emit("\tVMOVDQU %s, Y12", counterLow)
	}
	emit("\tVPXOR Y13, Y13, Y13")
	emit("\tVPBROADCASTD blocklen<>(SB), Y14")
	emit("\tVPBROADCASTD %s, Y15", flags)
}

// transpose8 turns Y0-Y7 (lane l's eight words in Yl) into eight registers
// of one word each, for lanes 0-7, through Y8-Y15; it returns the
// registers holding words 0-7.
func transpose8() [8]int {
	// 32-bit interleave of lane pairs
	for p := range 4 {
		a, b := 2*p, 2*p+1
		emit("\tVPUNPCKLDQ Y%d, Y%d, Y%d", b, a, 8+2*p)
		emit("\tVPUNPCKHDQ Y%d, Y%d, Y%d", b, a, 9+2*p)
	}
	// Y8: l0l1 w0 w1 | w4 w5, Y9: l0l1 w2 w3 | w6 w7, Y10/Y11: l2l3 ...
	// 64-bit interleave: words of lanes 0-3 (Y8-Y11) into Y0-Y3, 4-7 into Y4-Y7
	for g := range 2 {
		lo, hi := 8+4*g, 10+4*g                                // lanes 0,1 and 2,3 (or 4,5 and 6,7)
		emit("\tVPUNPCKLQDQ Y%d, Y%d, Y%d", hi, lo, 4*g+0)     // w0 | w4
		emit("\tVPUNPCKHQDQ Y%d, Y%d, Y%d", hi, lo, 4*g+1)     // w1 | w5
		emit("\tVPUNPCKLQDQ Y%d, Y%d, Y%d", hi+1, lo+1, 4*g+2) // w2 | w6
		emit("\tVPUNPCKHQDQ Y%d, Y%d, Y%d", hi+1, lo+1, 4*g+3) // w3 | w7
	}
	// 128-bit halves: lanes 0-3 from Y0-Y3, lanes 4-7 from Y4-Y7
	var words [8]int
	for k := range 4 {
		emit("\tVPERM2I128 $0x20, Y%d, Y%d, Y%d", 4+k, k, 8+k)  // word k
		emit("\tVPERM2I128 $0x31, Y%d, Y%d, Y%d", 4+k, k, 12+k) // word k+4
		words[k], words[k+4] = 8+k, 12+k
	}
	return words
}

// initStateZ is initState for 16 lanes in Z8-Z15.
func initStateZ(counterLow, flags string) {
	for i := range 4 {
		emit("\tVPBROADCASTD iv<>+%d(SB), Z%d", 4*i, 8+i)
	}
	if counterLow == "" {
		emit("\tVPXORD Z12, Z12, Z12")
	} else {
		emit("\tVMOVDQU32 %s, Z12", counterLow)
	}
	emit("\tVPXORD Z13, Z13, Z13")
	emit("\tVPBROADCASTD blocklen<>(SB), Z14")
	emit("\tVPBROADCASTD %s, Z15", flags)
}

func data() {
	for i, w := range iv {
		emit("DATA iv<>+%d(SB)/4, $0x%08x", 4*i, w)
	}
	emit("GLOBL iv<>(SB), RODATA|NOPTR, $32")
	emit("DATA blocklen<>+0(SB)/4, $64")
	emit("GLOBL blocklen<>(SB), RODATA|NOPTR, $4")
	for _, rot := range []struct {
		name  string
		bytes int
	}{{"rot16", 2}, {"rot8", 1}} {
		for q := range 4 {
			var v uint64
			for b := 7; b >= 0; b-- {
				word, at := (q*8+b)/4, (q*8+b)%4
				src := (word%4)*4 + (at+rot.bytes)%4
				v = v<<8 | uint64(src)
			}
			emit("DATA %s<>+%d(SB)/8, $0x%016x", rot.name, 8*q, v)
		}
		emit("GLOBL %s<>(SB), RODATA|NOPTR, $32", rot.name)
	}
}

// Locals of chunks8, at offsets from DX: SP rounded up to 32 bytes, so
// that no slot straddles a cache line (the scratch slot is stored and
// loaded back at once: a split slot defeats store-to-load forwarding, and
// costs half the speed).
const (
	hOff       = 0   // 8 words x 8 lanes: the chaining values
	mOff       = 256 // 16 words x 8 lanes: the block, transposed
	tmpOff     = 768 // 32-byte scratch
	countOff   = 800 // the lanes' chunk counters
	flagsOff   = 832 // this block's flags
	frame      = 840 + 32
	alignFrame = "\tLEAQ 31(SP), DX\n\tANDQ $~31, DX"
)

var inRegs = [8]string{"R8", "R9", "R10", "R11", "R12", "R13", "AX", "BX"}

func chunks8() {
	emit("// func chunks8(in *[8]*byte, counters *[8]uint32, out *[8][8]uint32, next *[8]*byte)")
	emit("TEXT ·chunks8(SB), 0, $%d-32", frame)
	emit("\tMOVQ in+0(FP), DI")
	for l, r := range inRegs {
		emit("\tMOVQ %d(DI), %s", 8*l, r)
	}
	emit(alignFrame)
	emit("\tMOVQ counters+8(FP), DI")
	emit("\tVMOVDQU (DI), Y0")
	emit("\tVMOVDQU Y0, %d(DX)", countOff)
	emit("\tMOVQ next+24(FP), SI")
	for i := range 8 {
		emit("\tVPBROADCASTD iv<>+%d(SB), Y0", 4*i)
		emit("\tVMOVDQU Y0, %d(DX)", hOff+32*i)
	}
	emit("\tXORQ CX, CX // byte offset of the block in each chunk")
	emit("block:")
	for half := range 2 {
		for l, r := range inRegs {
			emit("\tVMOVDQU %d(%s)(CX*1), Y%d", 32*half, r, l)
		}
		for w, reg := range transpose8() {
			emit("\tVMOVDQU Y%d, %d(DX)", reg, mOff+32*(8*half+w))
		}
	}
	// The next call's block at this offset, into the cache meanwhile:
	// eight streams of 16 lines each are too short for the hardware
	// prefetcher to pick up.
	for l := range 8 {
		emit("\tMOVQ %d(SI), DI", 8*l)
		emit("\tPREFETCHT0 (DI)(CX*1)")
	}
	emit("\tXORL DI, DI")
	emit("\tCMPQ CX, $0")
	emit("\tJNE notfirst")
	emit("\tORL $1, DI // CHUNK_START")
	emit("notfirst:")
	emit("\tCMPQ CX, $960")
	emit("\tJNE notlast")
	emit("\tORL $2, DI // CHUNK_END")
	emit("notlast:")
	emit("\tMOVL DI, %d(DX)", flagsOff)
	for i := range 8 {
		emit("\tVMOVDQU %d(DX), Y%d", hOff+32*i, i)
	}
	initState(fmt.Sprintf("%d(DX)", countOff), fmt.Sprintf("%d(DX)", flagsOff))
	rounds(func(k int) string { return fmt.Sprintf("%d(DX)", mOff+32*k) }, fmt.Sprintf("%d(DX)", tmpOff))
	for i := range 8 {
		emit("\tVPXOR Y%d, Y%d, Y%d", 8+i, i, i)
		emit("\tVMOVDQU Y%d, %d(DX)", i, hOff+32*i)
	}
	emit("\tADDQ $64, CX")
	emit("\tCMPQ CX, $1024")
	emit("\tJNE block")
	emit("\tMOVQ out+16(FP), DI")
	for i := range 8 {
		emit("\tVMOVDQU Y%d, %d(DI)", i, 32*i)
	}
	emit("\tVZEROUPPER")
	emit("\tRET")
}

func parents8() {
	emit("// func parents8(msg *[16][8]uint32, flags uint32, out *[8][8]uint32)")
	emit("TEXT ·parents8(SB), NOSPLIT, $72-24")
	emit(alignFrame)
	emit("\tMOVQ msg+0(FP), DI")
	emit("\tMOVL flags+8(FP), AX")
	emit("\tMOVL AX, 32(DX)")
	for i := range 8 {
		emit("\tVPBROADCASTD iv<>+%d(SB), Y%d", 4*i, i)
	}
	initState("", "32(DX)")
	rounds(func(k int) string { return fmt.Sprintf("%d(DI)", 32*k) }, "0(DX)")
	emit("\tMOVQ out+16(FP), DI")
	for i := range 8 {
		emit("\tVPXOR Y%d, Y%d, Y%d", 8+i, i, i)
		emit("\tVMOVDQU Y%d, %d(DI)", i, 32*i)
	}
	emit("\tVZEROUPPER")
	emit("\tRET")
}

// Locals of chunks16, at offsets from DX: SP rounded up to 64 bytes.
const (
	hOff16       = 0    // 8 words x 16 lanes: the chaining values
	mOff16       = 512  // 16 words x 16 lanes: the block, transposed
	countOff16   = 1536 // the lanes' chunk counters
	flagsOff16   = 1600 // this block's flags
	frame16      = 1608 + 64
	alignFrame64 = "\tLEAQ 63(SP), DX\n\tANDQ $~63, DX"
)

// transpose16 turns Z16-Z31 (lane l's 16 words in Z16+l) into Z16-Z31
// holding words 0-15 of the 16 lanes, through Z0-Z15.
func transpose16() {
	// 32-bit interleave of lane pairs: Z2p = l2p,l2p+1 words 4k,4k+1 in
	// 128-bit block k; Z2p+1 words 4k+2, 4k+3.
	for p := range 8 {
		a, b := 16+2*p, 17+2*p
		emit("\tVPUNPCKLDQ Z%d, Z%d, Z%d", b, a, 2*p)
		emit("\tVPUNPCKHDQ Z%d, Z%d, Z%d", b, a, 2*p+1)
	}
	// 64-bit interleave: Z16+4g+j = lanes 4g-4g+3, word 4k+j in block k.
	for g := range 4 {
		lo, hi := 4*g, 4*g+2
		emit("\tVPUNPCKLQDQ Z%d, Z%d, Z%d", hi, lo, 16+4*g+0)
		emit("\tVPUNPCKHQDQ Z%d, Z%d, Z%d", hi, lo, 16+4*g+1)
		emit("\tVPUNPCKLQDQ Z%d, Z%d, Z%d", hi+1, lo+1, 16+4*g+2)
		emit("\tVPUNPCKHQDQ Z%d, Z%d, Z%d", hi+1, lo+1, 16+4*g+3)
	}
	// 4x4 transpose of 128-bit blocks, for each j: block g of word 4k+j
	// is block k of Z16+4g+j.
	for j := range 4 {
		a, b, c, d := 16+j, 20+j, 24+j, 28+j
		emit("\tVSHUFI32X4 $0x44, Z%d, Z%d, Z%d", b, a, 4*j+0) // a0 a1 b0 b1
		emit("\tVSHUFI32X4 $0xee, Z%d, Z%d, Z%d", b, a, 4*j+1) // a2 a3 b2 b3
		emit("\tVSHUFI32X4 $0x44, Z%d, Z%d, Z%d", d, c, 4*j+2) // c0 c1 d0 d1
		emit("\tVSHUFI32X4 $0xee, Z%d, Z%d, Z%d", d, c, 4*j+3) // c2 c3 d2 d3
	}
	for j := range 4 {
		p, q, r, s := 4*j, 4*j+1, 4*j+2, 4*j+3
		emit("\tVSHUFI32X4 $0x88, Z%d, Z%d, Z%d", r, p, 16+0+j)  // word j
		emit("\tVSHUFI32X4 $0xdd, Z%d, Z%d, Z%d", r, p, 16+4+j)  // word 4+j
		emit("\tVSHUFI32X4 $0x88, Z%d, Z%d, Z%d", s, q, 16+8+j)  // word 8+j
		emit("\tVSHUFI32X4 $0xdd, Z%d, Z%d, Z%d", s, q, 16+12+j) // word 12+j
	}
}

// chunks16 is chunks8 for 16 lanes in ZMM registers: the block is loaded
// into Z16-Z31 and transposed there, so the rounds read the message words
// from registers.
func chunks16() {
	emit("// func chunks16(in *[16]*byte, counters *[16]uint32, out *[8][16]uint32, next *[16]*byte)")
	emit("TEXT ·chunks16(SB), 0, $%d-32", frame16)
	emit("\tMOVQ in+0(FP), SI")
	emit(alignFrame64)
	emit("\tMOVQ counters+8(FP), DI")
	emit("\tVMOVDQU32 (DI), Z0")
	emit("\tVMOVDQU32 Z0, %d(DX)", countOff16)
	for i := range 8 {
		emit("\tVPBROADCASTD iv<>+%d(SB), Z0", 4*i)
		emit("\tVMOVDQU32 Z0, %d(DX)", hOff16+64*i)
	}
	emit("\tXORQ CX, CX // byte offset of the block in each chunk")
	emit("block16:")
	for l := range 16 {
		emit("\tMOVQ %d(SI), AX", 8*l)
		emit("\tVMOVDQU32 (AX)(CX*1), Z%d", 16+l)
	}
	transpose16()
	emit("\tMOVQ next+24(FP), DI")
	for l := range 16 {
		emit("\tMOVQ %d(DI), AX", 8*l)
		emit("\tPREFETCHT0 (AX)(CX*1)")
	}
	emit("\tXORL DI, DI")
	emit("\tCMPQ CX, $0")
	emit("\tJNE notfirst16")
	emit("\tORL $1, DI // CHUNK_START")
	emit("notfirst16:")
	emit("\tCMPQ CX, $960")
	emit("\tJNE notlast16")
	emit("\tORL $2, DI // CHUNK_END")
	emit("notlast16:")
	emit("\tMOVL DI, %d(DX)", flagsOff16)
	for i := range 8 {
		emit("\tVMOVDQU32 %d(DX), Z%d", hOff16+64*i, i)
	}
	initStateZ(fmt.Sprintf("%d(DX)", countOff16), fmt.Sprintf("%d(DX)", flagsOff16))
	rounds(func(k int) string { return fmt.Sprintf("Z%d", 16+k) }, "")
	for i := range 8 {
		emit("\tVPXORD Z%d, Z%d, Z%d", 8+i, i, i)
		emit("\tVMOVDQU32 Z%d, %d(DX)", i, hOff16+64*i)
	}
	emit("\tADDQ $64, CX")
	emit("\tCMPQ CX, $1024")
	emit("\tJNE block16")
	emit("\tMOVQ out+16(FP), DI")
	for i := range 8 {
		emit("\tVMOVDQU32 Z%d, %d(DI)", i, 64*i)
	}
	emit("\tVZEROUPPER")
	emit("\tRET")
}

func parents16() {
	emit("// func parents16(msg *[16][16]uint32, flags uint32, out *[8][16]uint32)")
	emit("TEXT ·parents16(SB), NOSPLIT, $8-24")
	emit("\tMOVQ msg+0(FP), DI")
	emit("\tMOVL flags+8(FP), AX")
	emit("\tMOVL AX, 0(SP)")
	for i := range 8 {
		emit("\tVPBROADCASTD iv<>+%d(SB), Z%d", 4*i, i)
	}
	initStateZ("", "0(SP)")
	rounds(func(k int) string { return fmt.Sprintf("%d(DI)", 64*k) }, "")
	emit("\tMOVQ out+16(FP), DI")
	for i := range 8 {
		emit("\tVPXORD Z%d, Z%d, Z%d", 8+i, i, i)
		emit("\tVMOVDQU32 Z%d, %d(DI)", i, 64*i)
	}
	emit("\tVZEROUPPER")
	emit("\tRET")
}

func main() {
	emit("// Code generated by gen_amd64.go; DO NOT EDIT.")
	emit("")
	emit("//go:build amd64 && !purego")
	emit("")
	emit("#include \"textflag.h\"")
	emit("")
	data()
	emit("")
	chunks8()
	emit("")
	parents8()
	emit("")
	chunks16()
	emit("")
	parents16()
	os.Stdout.WriteString(out.String())
}
