package dumper

import (
	"runtime/debug"
	"testing"
)

// TestLimitMemory checks that the Go limit is the total less the file
// pages mapped (the test binary maps some), never below minHeapLimit, and
// that stop leaves it as it is.
func TestLimitMemory(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	const total = 1 << 30
	stop := LimitMemory(total, nil)
	got := debug.SetMemoryLimit(-1)
	stop()
	if got >= total || got < total-512<<20 {
		t.Fatalf("limit %d, want a little under %d", got, total)
	}
	stop = LimitMemory(1<<20, nil)
	got = debug.SetMemoryLimit(-1)
	stop()
	if got != minHeapLimit {
		t.Fatalf("limit %d for a tiny total, want %d", got, minHeapLimit)
	}
}
