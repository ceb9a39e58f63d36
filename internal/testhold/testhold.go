// Package testhold lets fault-injection tests stop a dump at a named
// point. With CKPTFS_TEST_HOLD=point[:n][,point[:n]...] in the
// environment, the n-th time (default the first) the dumper passes point it
// prints "CKPTFS_HOLD point" on stderr and pauses for CKPTFS_TEST_HOLD_MS
// milliseconds (default 10000) or until the dump is aborted, so that a test
// can kill or signal it exactly there. Without the variable At costs one
// atomic load.
package testhold

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Env names the variable that arms hold points.
const Env = "CKPTFS_TEST_HOLD"

var (
	armed  atomic.Bool
	mu     sync.Mutex
	want   map[string]int // point -> occurrence that holds
	passed map[string]int
	pause  = 10 * time.Second
	abort  <-chan struct{}
)

func init() {
	spec := os.Getenv(Env)
	if spec == "" {
		return
	}
	want, passed = map[string]int{}, map[string]int{}
	for _, p := range strings.Split(spec, ",") {
		name, nth, _ := strings.Cut(strings.TrimSpace(p), ":")
		n, err := strconv.Atoi(nth)
		if err != nil || n < 1 {
			n = 1
		}
		want[name] = n
	}
	if ms, err := strconv.Atoi(os.Getenv(Env + "_MS")); err == nil && ms >= 0 {
		pause = time.Duration(ms) * time.Millisecond
	}
	armed.Store(true)
}

// SetAbort gives the channel whose closing ends a pause early.
func SetAbort(ch <-chan struct{}) {
	mu.Lock()
	abort = ch
	mu.Unlock()
}

// At is a hold point.
func At(point string) {
	if !armed.Load() {
		return
	}
	mu.Lock()
	passed[point]++
	hold := passed[point] == want[point]
	ch := abort
	mu.Unlock()
	if !hold {
		return
	}
	fmt.Fprintf(os.Stderr, "CKPTFS_HOLD %s\n", point)
	select {
	case <-ch:
	case <-time.After(pause):
	}
}
