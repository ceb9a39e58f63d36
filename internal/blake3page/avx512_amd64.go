//go:build amd64 && !purego

package blake3page

// avx512ByDefault says whether Sum uses the AVX-512 kernels on a CPU that
// has them.
const avx512ByDefault = false
