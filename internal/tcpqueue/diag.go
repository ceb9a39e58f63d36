package tcpqueue

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"runtime"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/proc"
)

// Sock is a TCP socket as sock_diag (NETLINK_SOCK_DIAG, inet_diag)
// lists it.
type Sock struct {
	State         int // TCP state (include/net/tcp_states.h)
	Local, Remote netip.AddrPort
	RecvQueue     int    // established: bytes received, not read
	Inode         uint64 // 0: no socket file (not accepted yet, or orphaned)
}

// List lists the TCP sockets of family (AF_INET or AF_INET6) in the
// states of mask (bit 1<<state) of the caller's network namespace.
func List(family int, mask uint32) ([]Sock, error) {
	// struct inet_diag_req_v2 (linux/inet_diag.h)
	req := make([]byte, 56)
	req[0], req[1] = byte(family), unix.IPPROTO_TCP
	ne.PutUint32(req[4:], mask)
	var out []Sock
	err := proc.SockDiag(req, func(m []byte) {
		if s, ok := parseDiagMsg(family, m); ok {
			out = append(out, s)
		}
	})
	return out, err
}

// parseDiagMsg reads a struct inet_diag_msg.
func parseDiagMsg(family int, b []byte) (Sock, bool) {
	if len(b) < 72 {
		return Sock{}, false
	}
	addr := func(a []byte) netip.Addr {
		if family == unix.AF_INET {
			return netip.AddrFrom4([4]byte(a[:4]))
		}
		return netip.AddrFrom16([16]byte(a[:16]))
	}
	sport, dport := binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:])
	return Sock{State: int(b[1]), Local: netip.AddrPortFrom(addr(b[8:24]), sport), Remote: netip.AddrPortFrom(addr(b[24:40]), dport),
		RecvQueue: int(ne.Uint32(b[56:])), Inode: uint64(ne.Uint32(b[68:]))}, true
}

// InNetns runs f on a thread of its own in the network namespace of the
// file netns ("" for the caller's): the thread ends with f. Sockets f
// makes stay in that namespace.
func InNetns(netns string, f func() error) error {
	if netns == "" {
		return f()
	}
	ns, err := os.Open(netns)
	if err != nil {
		return fmt.Errorf("network namespace: %w", err)
	}
	defer ns.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends in its namespace
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("enter network namespace %s: %w", netns, err)
			return
		}
		done <- f()
	}()
	return <-done
}
