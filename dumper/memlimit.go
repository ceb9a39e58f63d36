package dumper

import (
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// LimitMemory keeps the dumper's resident memory near total bytes (issue
// 17: the budget plus 256 MiB) and returns a function that stops it.
// Setting the Go memory limit to total was not enough: the GC lets
// garbage fill the heap up to the limit, and the pages of files the
// process maps come on top of it: Badger maps its value logs (~23 MiB a
// GiB dumped: pack index records, page-table chunks) and tables. So every
// tick, once the file pages mapped (RssFile) grew by releaseStep, repo's
// are taken out of the resident set (dedup.Store.ReleaseMappedPages; they
// stay in the page cache), and the Go limit is total less what is still
// mapped, at least minHeapLimit.
func LimitMemory(total int64, repo dedup.Repo) (stop func()) {
	rel, _ := repo.(mappedReleaser)
	rssFile := func() int64 {
		b, err := proc.Read(os.Getpid(), "status")
		if err != nil {
			return 0
		}
		var kib int64
		fmt.Sscanf(proc.KeyValues(b)["RssFile"], "%d", &kib)
		return kib << 10
	}
	released := rssFile()
	set := func() {
		mapped := rssFile()
		if rel != nil && mapped > released+releaseStep {
			if err := rel.ReleaseMappedPages(); err != nil {
				rel = nil // a kernel without MADV_PAGEOUT: the limit alone
			}
			mapped = rssFile()
			released = mapped
		}
		debug.SetMemoryLimit(max(total-mapped, minHeapLimit))
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

// mappedReleaser is a repo whose mapped files can leave the resident set.
type mappedReleaser interface{ ReleaseMappedPages() error }

// releaseStep is how much the file pages mapped grow before LimitMemory
// releases the repo's.
const releaseStep = 16 << 20

// minHeapLimit is the least Go memory limit LimitMemory sets.
const minHeapLimit = 64 << 20

// memLimitTick is how often LimitMemory looks at the file pages mapped.
const memLimitTick = 50 * time.Millisecond
