package wptrack

import "unsafe"

// addr is the address of b's first byte (tests and callers in this process).
func addr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }
