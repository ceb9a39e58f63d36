//go:build amd64 && !purego

package blake3page

// avx512ByDefault says whether Sum uses the AVX-512 kernels on a CPU that
// has them: on by default, as on an AMD EPYC (Zen 4, which splits 512-bit
// operations in two 256-bit halves) they hash ~1.4x as many pages per
// CPU-second as the AVX2 kernels, warm or cold (BenchmarkKernel*).
const avx512ByDefault = true
