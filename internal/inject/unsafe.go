//go:build linux && amd64

package inject

import "unsafe"

func uintptrOf(p *uint64) uintptr { return uintptr(unsafe.Pointer(p)) }
