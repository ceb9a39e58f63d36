//go:build !amd64 || purego

package blake3page

func setAVX2(bool) {}

func setAVX512(bool) bool { return false }

func hasAVX512() bool { return false }
