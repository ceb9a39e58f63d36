package restorer

import (
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// TestCheckPtyTerminals: a pty of the checkpoint as controlling terminal
// and its slave fds need no --shell-job when the session leader is
// restored; a session led from outside is refused; a pair whose index is
// taken on this machine, or locked with open slaves, is refused.
func TestCheckPtyTerminals(t *testing.T) {
	const n = 2047 // the last pts index, free on a test machine
	pty := (&image.Pty{Index: n, Mode: 0o620, CC: make([]byte, image.PtyCCs)}).Object(nil, nil)
	nr := uint64(unix.Mkdev(136+n/256, n%256))
	slave := &image.FD{Num: 0, Kind: image.FDChar, Path: ptsPath(n), Flags: unix.O_RDWR, Object: pty.ID}
	master := &image.FD{Num: 5, Kind: image.FDPty, Path: "/dev/ptmx", Flags: unix.O_RDWR, Object: pty.ID,
		Extra: []string{"tty-index: " + strconv.Itoa(n)}}
	server := &image.Task{PID: 10, SID: 10, PGID: 10, FDs: []*image.FD{master}}
	shell := &image.Task{PID: 11, PPID: 10, SID: 11, PGID: 11, TTYNr: nr, TPGID: 11, FDs: []*image.FD{slave}}
	c := &image.Checkpoint{RootPID: 10, Tasks: []*image.Task{server, shell}, Objects: []*image.Object{pty}}
	if err := checkTerminals(c, false); err != nil {
		t.Fatalf("a tmux-like tree: %v", err)
	}
	if err := checkPtys(c); err != nil {
		t.Fatalf("a tmux-like tree: %v", err)
	}
	for _, f := range []*image.FD{master, slave} {
		if err := checkFD(c, shell, f, nil); err != nil {
			t.Errorf("fd %d: %v", f.Num, err)
		}
	}
	outside := &image.Task{PID: 12, PPID: 10, SID: 99, PGID: 12, TTYNr: nr}
	c.Tasks = append(c.Tasks, outside)
	if err := checkPtys(c); err == nil || !strings.Contains(err.Error(), "led from outside") {
		t.Errorf("session led from outside: got %v", err)
	}
	c.Tasks = c.Tasks[:2]

	// A pty of ours holds its index.
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/ptmx: %v", err)
	}
	defer unix.Close(m)
	idx, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	taken := (&image.Pty{Index: idx, CC: make([]byte, image.PtyCCs)}).Object(nil, nil)
	if err := (ptyKind{}).check(&image.Checkpoint{Objects: []*image.Object{taken}}, server,
		&image.FD{Kind: image.FDPty, Object: taken.ID}); err == nil || !strings.Contains(err.Error(), "/dev/pts/"+strconv.Itoa(idx)+" is in use on this machine") {
		t.Errorf("index %d in use: got %v", idx, err)
	}
	locked := (&image.Pty{Index: n, Locked: true, CC: make([]byte, image.PtyCCs)}).Object(nil, nil)
	c.Objects = []*image.Object{locked}
	if err := checkPtys(c); err == nil || !strings.Contains(err.Error(), "locked") {
		t.Errorf("locked with a slave fd: got %v", err)
	}
}
