package dumper

import (
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/ckptfs/ckptfs/internal/proc"
)

// LimitMemory keeps the dumper's resident memory near total bytes (issue
// 17: the budget plus 256 MiB) and returns a function that stops it.
// Setting the Go memory limit to total was not enough: the GC lets
// garbage fill the heap up to the limit, and the pages of files the
// process maps (Badger maps its value logs and tables; the binary) come on
// top of it, ~23 MiB a GiB dumped. So every tick the limit is total less
// what the process maps of files (RssFile), at least minHeapLimit.
func LimitMemory(total int64) (stop func()) {
	set := func() {
		limit := total
		if b, err := proc.Read(os.Getpid(), "status"); err == nil {
			var kib int64
			fmt.Sscanf(proc.KeyValues(b)["RssFile"], "%d", &kib)
			limit -= kib << 10
		}
		debug.SetMemoryLimit(max(limit, minHeapLimit))
	}
	set()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(memLimitTick)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				set()
			}
		}
	}()
	return func() { close(done) }
}

// minHeapLimit is the least Go memory limit LimitMemory sets.
const minHeapLimit = 64 << 20

// memLimitTick is how often LimitMemory looks at the file pages mapped.
const memLimitTick = 50 * time.Millisecond
