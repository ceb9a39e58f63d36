package netlock

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/tcpqueue"
)

// testNetns makes a network namespace for the test, with lo up.
func testNetns(t *testing.T) string {
	if os.Geteuid() != 0 {
		t.Skip("nftables and network namespaces need root")
	}
	name := fmt.Sprintf("ckptfs-netlock-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	return "/run/netns/" + name
}

// inNetns runs fn on a thread of its own in netns (the thread is thrown
// away afterwards).
func inNetns(t *testing.T, netns string, fn func() error) {
	errc := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		fd, err := unix.Open(netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	a := sa.(*unix.SockaddrInet4)
	return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
}

// lockedPair makes, in a new namespace, a loopback connection: the
// client's fd, the server's and the server's view of it.
func lockedPair(t *testing.T) (ns string, cl, sv int, conn Conn) {
	t.Helper()
	ns = testNetns(t)
	inNetns(t, ns, func() error {
		l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(l)
		if err := unix.Bind(l, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		unix.Listen(l, 1)
		sa, _ := unix.Getsockname(l)
		if cl, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err := unix.Connect(cl, sa); err != nil {
			return err
		}
		if sv, _, err = unix.Accept4(l, unix.SOCK_CLOEXEC); err != nil {
			return err
		}
		local, _ := unix.Getsockname(sv)
		remote, _ := unix.Getpeername(sv)
		conn = Conn{Local: addrPort(local), Remote: addrPort(remote)}
		return nil
	})
	t.Cleanup(func() { unix.Close(cl); unix.Close(sv) })
	return ns, cl, sv, conn
}

// TestLockDrops: a locked connection's packets are dropped (bytes sent do
// not arrive), and arrive once it is unlocked; the table is listed while
// it exists and unlocking twice is no error.
func TestLockDrops(t *testing.T) {
	ns, cl, sv, conn := lockedPair(t)
	name := Prefix + "test"
	if err := Lock(ns, name, []Conn{conn}); err != nil {
		t.Fatal(err)
	}
	if ts, err := Tables(ns); err != nil || !slices.Contains(ts, name) {
		t.Fatalf("tables %v %v, want %s", ts, err, name)
	}
	if host, _ := Tables(""); slices.Contains(host, name) {
		t.Fatal("the lock table is in the test's own namespace")
	}
	if _, err := unix.Write(cl, []byte("x")); err != nil {
		t.Fatal(err)
	}
	fds := []unix.PollFd{{Fd: int32(sv), Events: unix.POLLIN}}
	if n, _ := unix.Poll(fds, 300); n != 0 {
		t.Fatal("a byte got through the lock")
	}
	if err := Unlock(ns, name); err != nil {
		t.Fatal(err)
	}
	if ts, _ := Tables(ns); slices.Contains(ts, name) {
		t.Fatal("the lock table is still there")
	}
	if n, _ := unix.Poll(fds, 30000); n != 1 {
		t.Fatal("the byte held back did not arrive after the unlock")
	}
	if err := Unlock(ns, name); err != nil {
		t.Fatalf("second unlock: %v", err)
	}
}

// TestLockPassesMarked: packets marked tcpqueue.Mark (the segments a
// restore injects to put queued connections back) pass a lock that drops
// the connection's other packets.
func TestLockPassesMarked(t *testing.T) {
	ns, cl, sv, conn := lockedPair(t)
	name := Prefix + "marked"
	if err := Lock(ns, name, []Conn{conn}); err != nil {
		t.Fatal(err)
	}
	defer Unlock(ns, name)
	if err := unix.SetsockoptInt(cl, unix.SOL_SOCKET, unix.SO_MARK, tcpqueue.Mark|7); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(cl, []byte("x")); err != nil {
		t.Fatal(err)
	}
	fds := []unix.PollFd{{Fd: int32(sv), Events: unix.POLLIN}}
	if n, _ := unix.Poll(fds, 30000); n != 1 {
		t.Fatal("a marked byte did not get through the lock")
	}
}
