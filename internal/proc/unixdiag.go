package proc

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// UnixSocket is what sock_diag tells about a unix socket.
type UnixSocket struct {
	Ino    uint64
	Type   int    // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
	State  int    // TCP_ESTABLISHED (1), TCP_LISTEN (10), TCP_CLOSE (7)
	Peer   uint64 // inode of the peer, 0 if none
	Name   string // bound address ("@..." for abstract), "" if unnamed
	RQueue uint32 // bytes (stream) or datagrams queued for reading
}

// sock_diag constants (linux/sock_diag.h, linux/unix_diag.h).
const (
	sockDiagByFamily = 20
	udiagShowName    = 0x01
	udiagShowPeer    = 0x04
	udiagShowRQLen   = 0x10
	unixDiagName     = 0
	unixDiagPeer     = 2
	unixDiagRQLen    = 4
)

// UnixSockets lists the unix sockets of the network namespace we run in,
// by inode, with their peers and queue lengths (NETLINK_SOCK_DIAG).
func UnixSockets() (map[uint64]*UnixSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	// nlmsghdr + unix_diag_req
	req := make([]byte, 16+24)
	le := binary.LittleEndian
	le.PutUint32(req[0:], uint32(len(req)))
	le.PutUint16(req[4:], sockDiagByFamily)
	le.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	le.PutUint32(req[8:], 1)
	req[16] = unix.AF_UNIX
	le.PutUint32(req[20:], ^uint32(0)) // all states
	le.PutUint32(req[28:], udiagShowName|udiagShowPeer|udiagShowRQLen)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	out := map[uint64]*UnixSocket{}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag reply: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag reply: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				return nil, fmt.Errorf("sock_diag: error reply")
			}
			if s := parseUnixDiag(m.Data); s != nil {
				out[s.Ino] = s
			}
		}
	}
}

func parseUnixDiag(b []byte) *UnixSocket {
	if len(b) < 16 {
		return nil
	}
	le := binary.LittleEndian
	s := &UnixSocket{Type: int(b[1]), State: int(b[2]), Ino: uint64(le.Uint32(b[4:]))}
	for a := b[16:]; len(a) >= 4; {
		l, typ := int(le.Uint16(a)), le.Uint16(a[2:])
		if l < 4 || l > len(a) {
			break
		}
		v := a[4:l]
		switch typ {
		case unixDiagName:
			if len(v) > 0 && v[0] == 0 {
				s.Name = "@" + string(v[1:])
			} else {
				s.Name = string(v)
			}
		case unixDiagPeer:
			if len(v) >= 4 {
				s.Peer = uint64(le.Uint32(v))
			}
		case unixDiagRQLen:
			if len(v) >= 4 {
				s.RQueue = le.Uint32(v)
			}
		}
		step := (l + 3) &^ 3
		if step > len(a) {
			break
		}
		a = a[step:]
	}
	return s
}
