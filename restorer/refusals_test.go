package restorer

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// TestRefusals: the tree-only rules of preflight refuse an fd of a kind
// the restorer does not make, a pipe fd above 2 without its object, a
// pidfd of a pid not in the tree (a kind check that looks at the tree
// alone), and a mapping of a file deleted at dump time, each named; a peerless pipe, a
// standard fd to the outside and a terminal pass.
func TestRefusals(t *testing.T) {
	ok := &image.Task{PID: 10, FDs: []*image.FD{
		{Num: 0, Kind: image.FDPipe, Path: "pipe:[3]"},
		{Num: 2, Kind: image.FDChar, Path: "/dev/pts/4"},
		{Num: 9, Kind: image.FDPipe, Path: "pipe:[7]", Flags: unix.O_RDONLY, Object: "pipe-7"},
	}}
	c := &image.Checkpoint{RootPID: 10, Tasks: []*image.Task{ok},
		Objects: []*image.Object{{ID: "pipe-7", Kind: image.ObjPipe, Info: (&image.Pipe{Ino: 7}).Info()}}}
	if err := Refusals(c); err != nil {
		t.Fatalf("refused: %v", err)
	}
	bad := &image.Task{PID: 11,
		FDs: []*image.FD{
			{Num: 5, Kind: image.FDOther, Path: "anon_inode:[io_uring]"},
			{Num: 6, Kind: image.FDPipe, Path: "pipe:[8]"},
			{Num: 7, Kind: image.FDPidfd, Path: "anon_inode:[pidfd]", Extra: image.Pidfd{Pid: 4242}.Lines()},
		},
		VMAs: []*image.VMA{{Start: 0x10000, End: 0x11000, Kind: image.VMAFile, Name: "/dev/shm/sem.x (deleted)"}},
	}
	c.Tasks = append(c.Tasks, bad)
	err := Refusals(c)
	for _, want := range []string{"task 11: fd 5 (other anon_inode:[io_uring])", "task 11: fd 6 (pipe pipe:[8]): cannot restore", "fd 7 (pidfd anon_inode:[pidfd]): a pidfd of pid 4242, which is not a task", "/dev/shm/sem.x (deleted), which was already deleted at dump time"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Refusals = %v, want %q", err, want)
		}
	}
}
