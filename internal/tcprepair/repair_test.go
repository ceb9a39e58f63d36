package tcprepair

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// connPair returns the two ends of a loopback connection as raw fds.
func connPair(t *testing.T, network, addr string) (client, server int) {
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	defer l.Close()
	c, err := net.Dial(network, l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return rawFD(t, c), rawFD(t, s)
}

func rawFD(t *testing.T, c net.Conn) int {
	f, err := c.(*net.TCPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return fd
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func writeFD(t *testing.T, fd int, b []byte) {
	if err := writeAll(fd, b, 0); err != nil {
		t.Fatal(err)
	}
}

func readFull(t *testing.T, fd, n int) []byte {
	unix.SetNonblock(fd, false)
	buf := make([]byte, n)
	done := make(chan error, 1)
	go func() {
		for off := 0; off < n; {
			k, err := unix.Read(fd, buf[off:])
			if err != nil || k == 0 {
				done <- fmt.Errorf("at %d: %v", off, err)
				return
			}
			off += k
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read %d bytes: %v", n, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("read %d bytes: no data", n)
	}
	return buf
}

// TestDumpRestore dumps both ends of a loopback connection with bytes
// queued both ways, closes them in repair mode (nothing is sent), makes
// them again and checks that the queued bytes and new ones arrive.
func TestDumpRestore(t *testing.T) {
	for _, c := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(c.network, func(t *testing.T) { testDumpRestore(t, c.network, c.addr) })
	}
}

func testDumpRestore(t *testing.T, network, addr string) {
	cl, sv := connPair(t, network, addr)
	up, down := randBytes(200<<10), randBytes(100<<10)
	writeFD(t, cl, up)
	writeFD(t, sv, down)
	type end struct {
		fd            int
		local, remote unix.Sockaddr
		st            *State
	}
	ends := []*end{{fd: cl}, {fd: sv}}
	for _, e := range ends {
		if err := SetRepair(e.fd, true); err != nil {
			if err == unix.EPERM {
				t.Skip("TCP_REPAIR needs CAP_NET_ADMIN")
			}
			t.Fatal(err)
		}
		var err error
		if e.st, err = Dump(e.fd); err != nil {
			t.Fatal(err)
		}
		e.local, _ = unix.Getsockname(e.fd)
		e.remote, _ = unix.Getpeername(e.fd)
	}
	if got := len(ends[1].st.RecvQueue) + len(ends[0].st.SendQueue); got != len(up) {
		t.Fatalf("upstream bytes queued: %d, want %d", got, len(up))
	}
	for _, e := range ends {
		unix.Close(e.fd) // in repair mode: no FIN, no RST
	}
	family := unix.AF_INET
	if network == "tcp6" {
		family = unix.AF_INET6
	}
	for _, e := range ends {
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := Restore(fd, e.st, e.local, e.remote); err != nil {
			t.Fatal(err)
		}
		e.fd = fd
	}
	for _, e := range ends {
		if err := Resume(e.fd, e.st); err != nil {
			t.Fatal(err)
		}
	}
	defer unix.Close(ends[0].fd)
	defer unix.Close(ends[1].fd)
	if got := readFull(t, ends[1].fd, len(up)); !bytes.Equal(got, up) {
		t.Fatal("upstream bytes differ after the restore")
	}
	if got := readFull(t, ends[0].fd, len(down)); !bytes.Equal(got, down) {
		t.Fatal("downstream bytes differ after the restore")
	}
	more := randBytes(1 << 20)
	go func() {
		for b := more; len(b) > 0; {
			k, err := unix.Write(ends[0].fd, b)
			if err != nil {
				return
			}
			b = b[k:]
		}
	}()
	if got := readFull(t, ends[1].fd, len(more)); !bytes.Equal(got, more) {
		t.Fatal("bytes sent after the restore differ")
	}
}

// TestDumpLeavesWorking: repair mode on, Dump, repair mode off leaves the
// connection as it was: the queued bytes and new ones arrive.
func TestDumpLeavesWorking(t *testing.T) {
	cl, sv := connPair(t, "tcp4", "127.0.0.1:0")
	defer unix.Close(cl)
	defer unix.Close(sv)
	up := randBytes(100 << 10)
	writeFD(t, cl, up)
	for _, fd := range []int{cl, sv} {
		if err := SetRepair(fd, true); err != nil {
			t.Skip(err)
		}
		if _, err := Dump(fd); err != nil {
			t.Fatal(err)
		}
		if err := SetRepair(fd, false); err != nil {
			t.Fatal(err)
		}
	}
	more := randBytes(1000)
	writeFD(t, cl, more)
	if got := readFull(t, sv, len(up)+len(more)); !bytes.Equal(got, append(up, more...)) {
		t.Fatal("bytes differ after a dump")
	}
}
