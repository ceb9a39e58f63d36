// Package pageout takes the pages of files this process maps out of its
// resident set: madvise(MADV_PAGEOUT) on the mappings of the files asked
// for, found in /proc/self/maps.
//
// Badger maps its value logs and tables (MAP_SHARED) and writes through
// the mapping, so every page a dump writes to the store's value log stays
// in the dumper's RSS (~23 MiB a GiB dumped) though the kernel holds it in
// the page cache anyway. MADV_PAGEOUT unmaps such pages and lets the
// kernel reclaim them (a dirty page stays in the page cache until it is
// written back); a later access faults the page back in from the page
// cache or the file. It never changes the content of memory, of any kind:
// had a range been unmapped and reused between the read of maps and the
// madvise, its pages could at worst be reclaimed (anonymous ones only to
// swap), never lost, unlike MADV_DONTNEED.
package pageout

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/proc"
)

// Files pages out every mapping of this process of a file whose path
// match accepts, and returns how many bytes of mappings it advised. A
// kernel without MADV_PAGEOUT (before 5.4) gives an error wrapping
// unix.EINVAL.
func Files(match func(path string) bool) (int64, error) {
	b, err := proc.Read(os.Getpid(), "maps")
	if err != nil {
		return 0, err
	}
	ms, err := proc.ParseMaps(b)
	if err != nil {
		return 0, fmt.Errorf("page out: %w", err)
	}
	var n int64
	for _, m := range ms {
		if m.Inode == 0 || !match(m.Name) {
			continue
		}
		_, _, e := unix.Syscall(unix.SYS_MADVISE, uintptr(m.Start), uintptr(m.End-m.Start), unix.MADV_PAGEOUT)
		if e == unix.ENOMEM {
			continue // unmapped meanwhile
		}
		if e != 0 {
			return n, fmt.Errorf("page out %s: %w", m.Name, e)
		}
		n += int64(m.End - m.Start)
	}
	return n, nil
}
