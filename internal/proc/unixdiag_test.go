package proc

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestUnixSocketsPeers(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	unix.Write(fds[0], []byte("hello"))
	var st0, st1 unix.Stat_t
	unix.Fstat(fds[0], &st0)
	unix.Fstat(fds[1], &st1)
	socks, err := UnixSockets()
	if err != nil {
		t.Fatal(err)
	}
	a, b := socks[st0.Ino], socks[st1.Ino]
	if a == nil || b == nil {
		t.Fatalf("socketpair %d/%d not listed", st0.Ino, st1.Ino)
	}
	if a.Peer != st1.Ino || b.Peer != st0.Ino || a.Type != unix.SOCK_STREAM {
		t.Errorf("peers %+v %+v", a, b)
	}
	if b.RQueue != 5 {
		t.Errorf("queued %d bytes, want 5", b.RQueue)
	}
}
