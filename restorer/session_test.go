package restorer

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// TestCheckSessions checks which session and group shapes creation by
// inheritance can give back.
func TestCheckSessions(t *testing.T) {
	task := func(pid, ppid, pgid, sid int) *image.Task {
		return &image.Task{PID: pid, PPID: ppid, PGID: pgid, SID: sid, State: "S"}
	}
	for _, tc := range []struct {
		name     string
		tasks    []*image.Task
		shellJob bool
		err      string // "" if restorable
	}{
		{"started by a shell: group leader in an outside session",
			[]*image.Task{task(10, 1, 10, 5), task(11, 10, 10, 5)}, false, ""},
		{"root in an outside group", []*image.Task{task(10, 1, 7, 5), task(11, 10, 7, 5)}, false, ""},
		{"session leader with groups, grandchild, joiner and a nested session",
			[]*image.Task{task(10, 1, 10, 10), task(11, 10, 10, 10), task(12, 10, 12, 10), task(13, 12, 12, 10),
				task(14, 10, 12, 10), task(15, 10, 15, 15), task(16, 15, 15, 15)}, false, ""},
		{"the same with --shell-job",
			[]*image.Task{task(10, 1, 10, 10), task(11, 10, 10, 10), task(12, 10, 12, 10), task(15, 10, 15, 15)}, true, ""},
		{"child left its parent's session for an outside one",
			[]*image.Task{task(10, 1, 10, 10), task(11, 10, 11, 5)}, false, "task 11: cannot recreate its session 5"},
		{"group led from outside in a session led inside",
			[]*image.Task{task(10, 1, 10, 10), task(11, 10, 7, 10)}, false, "task 11: its process group 7 is led from outside"},
		{"group whose leader left it",
			[]*image.Task{task(10, 1, 10, 10), task(11, 10, 12, 10), task(12, 10, 10, 10)}, false, "task 11: its process group 12 is not led by task 12"},
		{"session led by a zombie",
			[]*image.Task{task(10, 1, 10, 5), {PID: 11, PPID: 10, PGID: 11, SID: 11, State: "Z"}, task(12, 10, 11, 11)},
			false, "its session 11 was led by a zombie"},
	} {
		c := &image.Checkpoint{RootPID: tc.tasks[0].PID, Tasks: tc.tasks}
		err := checkSessions(c, tc.shellJob)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.err)
		}
	}
}

// TestCheckTerminals: without --shell-job a terminal fd, or a controlling
// terminal of a session led inside the checkpoint, is refused with the pid,
// fd and terminal; a pty master always is.
func TestCheckTerminals(t *testing.T) {
	pts := uint64(unix.Mkdev(136, 3))
	for _, tc := range []struct {
		name     string
		task     *image.Task
		shellJob bool
		err      string
	}{
		{"no terminal", &image.Task{PID: 10, SID: 10, FDs: []*image.FD{{Num: 0, Kind: image.FDChar, Path: "/dev/null"}}}, false, ""},
		{"terminal fd", &image.Task{PID: 10, SID: 10, FDs: []*image.FD{{Num: 4, Kind: image.FDChar, Path: "/dev/pts/3"}}}, false,
			"task 10: fd 4 is the terminal /dev/pts/3: restore with --shell-job"},
		{"controlling terminal", &image.Task{PID: 10, SID: 10, TTYNr: pts}, false,
			"task 10 has the controlling terminal /dev/pts/3: restore with --shell-job"},
		{"controlling terminal of a session led from outside, no terminal fd", &image.Task{PID: 10, SID: 5, TTYNr: pts}, false, ""},
		{"pty master", &image.Task{PID: 10, SID: 10, FDs: []*image.FD{{Num: 5, Kind: image.FDChar, Path: "/dev/ptmx"}}}, true,
			"task 10: fd 5 is a pty master"},
	} {
		c := &image.Checkpoint{RootPID: 10, Tasks: []*image.Task{tc.task}}
		err := checkTerminals(c, tc.shellJob)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: refused: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.err)
		}
	}
	if ownTTYNr() == 0 {
		c := &image.Checkpoint{RootPID: 10, Tasks: []*image.Task{{PID: 10, SID: 10, TTYNr: pts}}}
		if err := checkTerminals(c, true); err == nil || !strings.Contains(err.Error(), "restore has none") {
			t.Errorf("--shell-job without a terminal: got %v", err)
		}
	}
}

func TestTTYName(t *testing.T) {
	for nr, want := range map[uint64]string{
		unix.Mkdev(136, 3): "/dev/pts/3", unix.Mkdev(137, 1): "/dev/pts/257",
		unix.Mkdev(4, 2): "/dev/tty2", unix.Mkdev(5, 1): "/dev/console", unix.Mkdev(188, 0): "tty 188:0",
	} {
		if got := ttyName(nr); got != want {
			t.Errorf("ttyName(%d) = %q, want %q", nr, got, want)
		}
	}
}
