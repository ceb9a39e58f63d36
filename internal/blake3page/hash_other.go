//go:build !amd64 || purego

package blake3page

const haveAVX2 = false

func sum8[H ~[32]byte](pages [][]byte, out []H, _ [][]byte) { sumGeneric(pages, out) }

const useAVX512 = false

func sum16[H ~[32]byte](pages [][]byte, out []H, _ [][]byte) { sumGeneric(pages, out) }
