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

func sockIno(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestUnixSocketsListener checks what sock_diag tells about a listening
// socket bound to a path: its name, backlog, socket file and the
// connections waiting to be accepted, in order; and about an accepted one.
func TestUnixSocketsListener(t *testing.T) {
	path := t.TempDir() + "/sock"
	l, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(l)
	if err := unix.Bind(l, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(l, 7); err != nil {
		t.Fatal(err)
	}
	var clients []int
	for i := 0; i < 3; i++ {
		c, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		defer unix.Close(c)
		if err := unix.Connect(c, &unix.SockaddrUnix{Name: path}); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	a, _, err := unix.Accept(l)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(a)
	socks, err := UnixSockets()
	if err != nil {
		t.Fatal(err)
	}
	ls := socks[sockIno(t, l)]
	var st unix.Stat_t
	unix.Stat(path, &st)
	if ls == nil || ls.State != UnixListen || ls.Name != path || ls.WQueue != 7 || ls.RQueue != 2 || ls.VFSIno != st.Ino {
		t.Fatalf("listener %+v", ls)
	}
	// Icons are the clients (their ends, the embryos, have no inode yet).
	if len(ls.Icons) != 2 || ls.Icons[0] != sockIno(t, clients[1]) || ls.Icons[1] != sockIno(t, clients[2]) {
		t.Errorf("icons %v, clients %d %d", ls.Icons, sockIno(t, clients[1]), sockIno(t, clients[2]))
	}
	if c := socks[sockIno(t, clients[1])]; c.Peer != 0 || c.State != UnixEstablished {
		t.Errorf("waiting client %+v", c)
	}
	lone, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0) // neither bound nor connected
	defer unix.Close(lone)
	if socks, err = UnixSockets(); err != nil {
		t.Fatal(err)
	}
	if s := socks[sockIno(t, lone)]; s == nil || s.Name != "" || s.Peer != 0 {
		t.Errorf("unbound socket: %+v", s)
	}
	as := socks[sockIno(t, a)]
	if as == nil || as.Name != path || as.Peer != sockIno(t, clients[0]) || as.State != UnixEstablished {
		t.Errorf("accepted %+v", as)
	}
}
