//go:build !amd64 || purego

package blake3page

func setAVX2(bool) {}
