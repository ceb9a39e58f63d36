package image

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPtyRefusal: a task whose controlling terminal is a pty of the tree
// needs its session leader in the tree; a locked pair has no slave fds;
// a pair of the tree as a tmux server and its shell hold it passes.
func TestPtyRefusal(t *testing.T) {
	nr := uint64(unix.Mkdev(136, 3))
	server := &Task{PID: 10, SID: 10, PGID: 10, FDs: []*FD{{Num: 5, Kind: FDPty, Path: "/dev/ptmx"}}}
	shell := &Task{PID: 11, PPID: 10, SID: 11, PGID: 11, TTYNr: nr, FDs: []*FD{{Num: 0, Kind: FDChar, Path: "/dev/pts/3"}}}
	c := &Checkpoint{RootPID: 10, Tasks: []*Task{server, shell}}
	if err := PtyRefusal(c, map[int]bool{3: false}); err != nil {
		t.Fatalf("tmux-like: %v", err)
	}
	if err := PtyRefusal(c, map[int]bool{3: true}); err == nil || !strings.Contains(err.Error(), "task 11: fd 0: pty /dev/pts/3 is locked") {
		t.Errorf("locked with a slave fd: %v", err)
	}
	shell.SID = 99
	if err := PtyRefusal(c, map[int]bool{3: false}); err == nil || !strings.Contains(err.Error(), "task 11: its controlling terminal /dev/pts/3 is a pty of the checkpoint but its session 99 is led from outside it") {
		t.Errorf("session led from outside: %v", err)
	}
	if err := PtyRefusal(c, map[int]bool{4: false}); err != nil {
		t.Errorf("a terminal not of the tree: %v", err)
	}
}

// TestSessionRefusalAnyFlags: a session led by a zombie of the tree is
// refused with and without --shell-job unless it is the root's; a tree
// that only --shell-job restores passes.
func TestSessionRefusalAnyFlags(t *testing.T) {
	root := &Task{PID: 10, PPID: 1, SID: 5, PGID: 10}
	leader := &Task{PID: 11, PPID: 10, SID: 11, PGID: 11, State: "Z"}
	member := &Task{PID: 12, PPID: 10, SID: 11, PGID: 12}
	c := &Checkpoint{RootPID: 10, Tasks: []*Task{root, leader, member}}
	if err := SessionRefusalAnyFlags(c); err == nil || !strings.Contains(err.Error(), "task 12: its session 11 was led by a zombie") {
		t.Errorf("session led by a zombie: %v", err)
	}
	c.Tasks = []*Task{root}
	if err := SessionRefusalAnyFlags(c); err != nil {
		t.Errorf("a root in a session led from outside: %v", err)
	}
}

// TestTerminalRefusalAnyFlags: a controlling terminal in a session led
// inside the tree but not the root's is refused whatever the flags; in
// the root's session, or a session led from outside, it is not.
func TestTerminalRefusalAnyFlags(t *testing.T) {
	nr := uint64(unix.Mkdev(4, 1)) // /dev/tty1
	root := &Task{PID: 10, PPID: 1, SID: 10, PGID: 10, TTYNr: nr}
	child := &Task{PID: 11, PPID: 10, SID: 11, PGID: 11, TTYNr: nr}
	c := &Checkpoint{RootPID: 10, Tasks: []*Task{root}}
	if err := TerminalRefusalAnyFlags(c, nil); err != nil {
		t.Errorf("the root's session: %v", err)
	}
	c.Tasks = append(c.Tasks, child)
	if err := TerminalRefusalAnyFlags(c, nil); err == nil || !strings.Contains(err.Error(), "task 11 has a controlling terminal") {
		t.Errorf("a session of the tree not the root's: %v", err)
	}
	child.SID = 99
	if err := TerminalRefusalAnyFlags(c, nil); err != nil {
		t.Errorf("a session led from outside: %v", err)
	}
}

// TestVMARefusal: a SysV attach cut by mprotect passes; one whose first
// page was unmapped is refused.
func TestVMARefusal(t *testing.T) {
	a := &VMA{Start: 0x10000, End: 0x12000, Kind: VMAShmem, Name: "/SYSV00000000", Inode: 7}
	b := &VMA{Start: 0x12000, End: 0x14000, Offset: 0x2000, Kind: VMAShmem, Name: "/SYSV00000000", Inode: 7}
	if err := VMARefusal(&Task{PID: 1, VMAs: []*VMA{a, b}}); err != nil {
		t.Errorf("an attach in two pieces: %v", err)
	}
	if err := VMARefusal(&Task{PID: 1, VMAs: []*VMA{b}}); err == nil || !strings.Contains(err.Error(), "task 1: vma 12000-14000 attaches SysV segment 7 from offset 0x2000") {
		t.Errorf("first page unmapped: %v", err)
	}
}
