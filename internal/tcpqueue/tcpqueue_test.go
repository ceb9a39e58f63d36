package tcpqueue

import (
	"bytes"
	"net/netip"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/tcprepair"
)

// inNewNetns runs f on a thread of its own in a new network namespace
// with lo up (the thread ends with f).
func inNewNetns(t *testing.T, f func()) {
	t.Helper()
	if unix.Geteuid() != 0 {
		t.Skip("needs root (a network namespace, BPF, raw sockets)")
	}
	done := make(chan struct{})
	var skip string
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with its namespace
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			skip = "unshare CLONE_NEWNET: " + err.Error()
			return
		}
		if err := loopbackUp(); err != nil {
			t.Errorf("lo up: %v", err)
			return
		}
		f()
	}()
	<-done
	if skip != "" {
		t.Skip(skip)
	}
}

func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	req, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, req); err != nil {
		return err
	}
	req.SetUint16(req.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, req)
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7+i/251)
	}
	return b
}

func readFull(t *testing.T, fd int, n int) []byte {
	t.Helper()
	out := make([]byte, 0, n)
	buf := make([]byte, 64<<10)
	for len(out) < n {
		k, err := unix.Read(fd, buf[:min(len(buf), n-len(out))])
		if err != nil || k == 0 {
			t.Fatalf("read after %d of %d bytes: %d, %v", len(out), n, k, err)
		}
		out = append(out, buf[:k]...)
	}
	return out
}

func writeAll(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// writeAsync writes b to fd in the background; the channel says how it went.
func writeAsync(fd int, b []byte) chan error {
	errc := make(chan error, 1)
	go func() { errc <- writeAll(fd, b) }()
	return errc
}

// waitAcked waits until everything fd sent is acknowledged.
func waitAcked(t *testing.T, fd int) {
	t.Helper()
	for {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		outq, _ := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
		if info.Unacked == 0 && outq == 0 {
			return
		}
		runtime.Gosched()
	}
}

// TestPutBack takes a queued connection out of its listener as a dump
// --kill does (accept, repair mode, state read, silent close), puts it
// back with Put and checks that the program's accept() gets it with the
// bytes the client had sent, and that both ways work after.
func TestPutBack(t *testing.T) {
	if err := Check(); err != nil {
		t.Skipf("this kernel cannot put connections back: %v", err)
	}
	for _, c := range []struct {
		name, listen, connect string
		fill                  bool
	}{{"ipv4", "127.0.0.1", "127.0.0.1", false}, {"ipv6", "::1", "::1", false}, {"dual-stack", "::", "127.0.0.1", false},
		{"full-queue", "127.0.0.1", "127.0.0.1", true}} {
		t.Run(c.name, func(t *testing.T) {
			inNewNetns(t, func() { putBack(t, netip.MustParseAddr(c.listen), netip.MustParseAddr(c.connect), c.fill) })
		})
	}
}

// fill sends on fd until the peer's receive queue is full (its window
// closed) and returns all it sent; the peer holds all but the unsent end.
func fill(t *testing.T, fd int) []byte {
	t.Helper()
	all := pattern(8<<20, 9)
	sent := 0
	for {
		n, err := unix.SendmsgN(fd, all[sent:sent+min(4096, len(all)-sent)], nil, nil, unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		sent += n
	}
	for {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		if info.Unacked == 0 {
			return all[:sent]
		}
		runtime.Gosched()
	}
}

func putBack(t *testing.T, addr, connect netip.Addr, full bool) {
	family, cfamily := unix.AF_INET, unix.AF_INET
	if addr.Is6() {
		family = unix.AF_INET6
	}
	if connect.Is6() {
		cfamily = unix.AF_INET6
	}
	l, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(l)
	if err := unix.Bind(l, sockaddr(netip.AddrPortFrom(addr, 0))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(l, 8); err != nil {
		t.Fatal(err)
	}
	lsa, _ := unix.Getsockname(l)
	c, err := unix.Socket(cfamily, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(c)
	if err := unix.Connect(c, sockaddr(netip.AddrPortFrom(connect, addrPort(lsa).Port()))); err != nil {
		t.Fatal(err)
	}
	sent := pattern(100000, 1)
	if full {
		sent = fill(t, c)
	} else {
		if err := writeAll(c, sent); err != nil {
			t.Fatal(err)
		}
		waitAcked(t, c)
	}

	// The dump: take the child out, read it in repair mode, close it silently.
	a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := tcprepair.SetRepair(a, true); err != nil {
		t.Fatal(err)
	}
	st, err := tcprepair.Dump(a)
	if err != nil {
		t.Fatal(err)
	}
	asa, _ := unix.Getsockname(a)
	psa, _ := unix.Getpeername(a)
	unix.Close(a)
	if full {
		t.Logf("sent %d bytes, %d in the queue", len(sent), len(st.RecvQueue))
	} else if len(st.RecvQueue) != len(sent) || len(st.SendQueue) != 0 {
		t.Fatalf("dumped queues: recv %d send %d", len(st.RecvQueue), len(st.SendQueue))
	}

	in, err := Open()
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer in.Close()
	child := Child{Local: addrPort(asa), Remote: addrPort(psa), SndNxt: st.SndSeq, RcvNxt: st.RcvSeq, MSS: st.MSS,
		Wscale: st.Wscale, SndWscale: st.SndWscale, RcvWscale: st.RcvWscale, SACK: st.SACK, Timestamps: st.Timestamps,
		Timestamp: st.Timestamp, Window: st.Window.SndWnd, Data: st.RecvQueue}
	if err := in.Put(child); err != nil {
		t.Fatalf("Put: %v", err)
	}
	socks, err := List(family, 1<<unix.BPF_TCP_ESTABLISHED)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	listed := false
	for _, s := range socks {
		listed = listed || s.Local == child.Local && s.Remote == child.Remote && s.Inode == 0 && s.RecvQueue == len(st.RecvQueue)
	}
	if !listed {
		t.Fatalf("sock_diag does not list the queued child with its %d bytes: %+v", len(sent), socks)
	}
	b, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(b)
	inq, _ := unix.IoctlGetInt(b, unix.SIOCINQ)
	binfo, _ := unix.GetsockoptTCPInfo(b, unix.IPPROTO_TCP, unix.TCP_INFO)
	t.Logf("accepted: %d bytes queued, state %d, rcv_mss %d, snd_mss %d, rcv_space %d", inq, binfo.State, binfo.Rcv_mss, binfo.Snd_mss, binfo.Rcv_space)
	if got := readFull(t, b, len(sent)); !bytes.Equal(got, sent) {
		t.Fatal("the put-back child's bytes differ from those sent")
	}
	reply := pattern(200000, 3)
	errc := writeAsync(b, reply)
	if got := readFull(t, c, len(reply)); !bytes.Equal(got, reply) {
		t.Fatal("reply differs")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	more := pattern(150000, 5)
	errc = writeAsync(c, more)
	if got := readFull(t, b, len(more)); !bytes.Equal(got, more) {
		t.Fatal("second request differs")
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
