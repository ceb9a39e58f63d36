package restorer

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// TestInheritFD checks which standard fds are taken from the restorer: a
// pipe with both ends in the checkpoint (seq | gzip) never is; a pipe or
// socket whose other end is outside always is; a terminal never is.
func TestInheritFD(t *testing.T) {
	pipeW := &image.FD{Num: 1, Kind: image.FDPipe, Path: "pipe:[7]", Flags: unix.O_WRONLY, Object: "pipe-7"}
	pipeR := &image.FD{Num: 0, Kind: image.FDPipe, Path: "pipe:[7]", Flags: unix.O_RDONLY, Object: "pipe-7"}
	outW := &image.FD{Num: 1, Kind: image.FDPipe, Path: "pipe:[8]", Flags: unix.O_WRONLY, Object: "pipe-8", OFD: "ofd-1"}
	outW2 := &image.FD{Num: 2, Kind: image.FDPipe, Path: "pipe:[8]", Flags: unix.O_WRONLY, Object: "pipe-8", OFD: "ofd-1"}
	sockA := &image.FD{Num: 0, Kind: image.FDSocket, Path: "socket:[9]", Object: "unix-9"}
	sockB := &image.FD{Num: 5, Kind: image.FDSocket, Path: "socket:[10]", Object: "unix-10"}
	sockC := &image.FD{Num: 1, Kind: image.FDSocket, Path: "socket:[11]", Object: "unix-11"}
	tty := &image.FD{Num: 2, Kind: image.FDChar, Path: "/dev/pts/3"}
	c := &image.Checkpoint{
		Tasks: []*image.Task{
			{PID: 10, FDs: []*image.FD{pipeW, outW, outW2, sockA, tty}},
			{PID: 11, FDs: []*image.FD{pipeR, sockB, sockC}},
		},
		Objects: []*image.Object{
			{ID: "pipe-7", Kind: image.ObjPipe, Info: (&image.Pipe{Ino: 7}).Info()},
			{ID: "pipe-8", Kind: image.ObjPipe, Info: (&image.Pipe{Ino: 8}).Info()},
			{ID: "unix-9", Kind: image.ObjUnixSocket, Info: []string{"ino: 9", "type: 1", "state: 1", "peer: 10", `name: ""`}},
			{ID: "unix-10", Kind: image.ObjUnixSocket, Info: []string{"ino: 10", "type: 1", "state: 1", "peer: 9", `name: ""`}},
			{ID: "unix-11", Kind: image.ObjUnixSocket, Info: []string{"ino: 11", "type: 1", "state: 1", "peer: 12", `name: ""`}},
		},
	}
	for _, tc := range []struct {
		name string
		pid  int
		f    *image.FD
		want bool
	}{
		{"seq stdout into gzip", 10, pipeW, false},
		{"gzip stdin from seq", 11, pipeR, false},
		{"stdout pipe to outside", 10, outW, true},
		{"stderr same pipe, same ofd", 10, outW2, true},
		{"socket with peer inside", 10, sockA, false},
		{"socket with peer outside", 11, sockC, true},
		{"terminal", 10, tty, false},
	} {
		if got := inheritFD(c, tc.pid, tc.f, map[int]string{}); got != tc.want {
			t.Errorf("%s: inheritFD = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestEintrByDump checks that only an epoll wait that failed with EINTR
// while no signal was pending is re-run.
func TestEintrByDump(t *testing.T) {
	eintr := ^uint64(unix.EINTR) + 1
	th := func(nr, rax uint64) *image.Thread {
		return &image.Thread{Regs: image.Regs{Orig_rax: nr, Rax: rax}}
	}
	task := &image.Task{}
	if !eintrByDump(task, th(unix.SYS_EPOLL_WAIT, eintr)) {
		t.Error("epoll_wait -EINTR without a pending signal: not re-run")
	}
	if eintrByDump(task, th(unix.SYS_READ, eintr)) {
		t.Error("read -EINTR re-run")
	}
	if eintrByDump(task, th(unix.SYS_EPOLL_WAIT, 1)) {
		t.Error("epoll_wait that returned 1 re-run")
	}
	pending := th(unix.SYS_EPOLL_PWAIT, eintr)
	pending.Pending = []image.Siginfo{{}}
	if eintrByDump(task, pending) {
		t.Error("epoll_pwait -EINTR with a pending signal re-run")
	}
}
