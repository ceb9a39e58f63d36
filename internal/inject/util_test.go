//go:build linux && amd64

package inject_test

import "strconv"

func fmtInt(n int) string { return strconv.Itoa(n) }
func atoi(s string) int   { n, _ := strconv.Atoi(s); return n }
