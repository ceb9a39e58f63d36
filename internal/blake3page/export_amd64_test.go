//go:build amd64 && !purego

package blake3page

func setAVX2(on bool) { haveAVX2 = on }

// setAVX512 turns the AVX-512 kernels on or off (on only where the CPU has
// them) and returns the previous setting.
func setAVX512(on bool) (was bool) {
	was, useAVX512 = useAVX512, on && haveAVX512
	return was
}

func hasAVX512() bool { return haveAVX512 }
