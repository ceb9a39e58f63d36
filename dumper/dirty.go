package dumper

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ckptfs/ckptfs/internal/proc"
)

// dirtyHeadroom estimates how many bytes of new dirty page cache the
// kernel takes before its background writeback starts: the background
// threshold (vm.dirty_background_bytes, else vm.dirty_background_ratio
// percent of the available memory, which is about the memory the kernel
// counts) less what is dirty or under writeback already. Below it a write
// into the page cache is a copy; above it writers start to be throttled
// to the disk's speed. 0 when it cannot be read.
func dirtyHeadroom() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	kv := proc.KeyValues(b)
	kib := func(k string) int64 {
		var n int64
		fmt.Sscanf(kv[k], "%d", &n)
		return n << 10
	}
	thresh := sysctlInt("vm/dirty_background_bytes")
	if thresh == 0 {
		thresh = sysctlInt("vm/dirty_background_ratio") * kib("MemAvailable") / 100
	}
	return max(thresh-kib("Dirty")-kib("Writeback"), 0)
}

// sysctlInt reads a number from /proc/sys (0 if it cannot).
func sysctlInt(name string) int64 {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}
