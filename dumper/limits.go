package dumper

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// readLimits reads the 16 resource limits of pid with prlimit, or from
// /proc/<pid>/limits where prlimit may not read them (a process of another
// uid, for a root without CAP_SYS_RESOURCE).
func readLimits(pid int) ([]image.Rlimit, error) {
	var out []image.Rlimit
	for r := 0; r < 16; r++ {
		var lim unix.Rlimit
		err := unix.Prlimit(pid, r, nil, &lim)
		if errors.Is(err, unix.EPERM) {
			b, err := proc.Read(pid, "limits")
			if err != nil {
				return nil, err
			}
			if out, err = image.ParseLimits(b); err != nil {
				return nil, fmt.Errorf("limits of %d: %w", pid, err)
			}
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("prlimit %d resource %d: %w", pid, r, err)
		}
		out = append(out, image.Rlimit{Resource: r, Cur: lim.Cur, Max: lim.Max})
	}
	return out, nil
}
