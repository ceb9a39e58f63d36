package dumper

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// timerfdKind is a timerfd: clock, time left, period and the whole count
// of unread expirations.
type timerfdKind struct{ noOps }

func (timerfdKind) fdKind() string { return image.FDTimerfd }
func (timerfdKind) classifies(link string, _ uint32) bool {
	return link == "anon_inode:[timerfd]"
}
func (timerfdKind) owns(*image.FD) bool { return true }

// dump makes fdinfo's "ticks" the timerfd's whole count of unread
// expirations. A periodic timer that expired is not re-armed until it is
// read, so fdinfo says "ticks: 1" however many periods went by;
// timerfd_gettime (on a duplicate taken with pidfd_getfd) adds the missed
// periods to the count and re-arms the timer, exactly as the program's own
// next read would, without consuming anything. fdinfo is then read again.
func (timerfdKind) dump(pid int, f *image.FD) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, f.Num, 0)
	if err != nil {
		return fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer unix.Close(dup)
	var cur unix.ItimerSpec
	if err := unix.TimerfdGettime(dup, &cur); err != nil {
		return fmt.Errorf("timerfd_gettime: %w", err)
	}
	info, err := proc.Read(pid, "fdinfo/"+strconv.Itoa(f.Num))
	if err != nil {
		return err
	}
	f.Extra = f.Extra[:0]
	for _, line := range strings.Split(strings.TrimRight(string(info), "\n"), "\n") {
		if k, _, _ := strings.Cut(line, ":"); k != "pos" && k != "flags" {
			f.Extra = append(f.Extra, line)
		}
	}
	return nil // read by image.ParseTimerfd (fdKindState)
}
