//go:build amd64 && !purego

package blake3page

func setAVX2(on bool) { haveAVX2 = on }
