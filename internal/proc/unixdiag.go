package proc

import (
	"encoding/binary"
	"strings"

	"golang.org/x/sys/unix"
)

// UnixSocket is what sock_diag tells about a unix socket.
type UnixSocket struct {
	Ino    uint64
	Type   int    // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET
	State  int    // TCP_ESTABLISHED (1), TCP_LISTEN (10), TCP_CLOSE (7)
	Peer   uint64 // inode of the peer, 0 if none
	Name   string // bound address ("@..." for abstract), "" if unnamed
	RQueue uint32 // listening: connections not yet accepted; stream, seqpacket: bytes queued; dgram: length of the first datagram
	WQueue uint32 // listening: the backlog (listen's argument); else bytes sent not yet received
	// Icons are, for a listening socket, the inodes of the connections
	// waiting to be accepted, in the order accept returns them.
	Icons    []uint64
	VFSIno   uint64 // inode of the socket file a path-bound socket made, 0 if none
	VFSDev   uint32 // its device (kernel encoding)
	Shutdown uint8  // SHUTDOWN_MASK bits: 1 receive, 2 send
}

// Socket states as sock_diag reports them.
const (
	UnixEstablished = 1
	UnixClose       = 7
	UnixListen      = 10
)

// sock_diag constants (linux/sock_diag.h, linux/unix_diag.h).
const (
	udiagShowName    = 0x01
	udiagShowVFS     = 0x02
	udiagShowPeer    = 0x04
	udiagShowIcons   = 0x08
	udiagShowRQLen   = 0x10
	unixDiagName     = 0
	unixDiagVFS      = 1
	unixDiagPeer     = 2
	unixDiagIcons    = 3
	unixDiagRQLen    = 4
	unixDiagShutdown = 6
)

// UnixSockets lists the unix sockets of the network namespace we run in,
// by inode, with their peers and queue lengths (NETLINK_SOCK_DIAG).
func UnixSockets() (map[uint64]*UnixSocket, error) {
	// struct unix_diag_req
	req := make([]byte, 24)
	le := binary.LittleEndian
	req[0] = unix.AF_UNIX
	le.PutUint32(req[4:], ^uint32(0)) // all states
	le.PutUint32(req[12:], udiagShowName|udiagShowVFS|udiagShowPeer|udiagShowIcons|udiagShowRQLen)
	out := map[uint64]*UnixSocket{}
	if err := SockDiag(req, func(m []byte) { addUnixDiag(m, out) }); err != nil {
		return nil, err
	}
	return out, nil
}

// parseUnixDiagReply adds the sockets of one sock_diag reply datagram to
// out; done says the dump ended (NLMSG_DONE).
func parseUnixDiagReply(b []byte, out map[uint64]*UnixSocket) (done bool, err error) {
	return parseSockDiagReply(b, func(m []byte) { addUnixDiag(m, out) })
}

func addUnixDiag(m []byte, out map[uint64]*UnixSocket) {
	if s := parseUnixDiag(m); s != nil {
		out[s.Ino] = s
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
				s.Name = strings.TrimRight(string(v), "\x00") // the kernel keeps a path's NUL
			}
		case unixDiagPeer:
			if len(v) >= 4 {
				s.Peer = uint64(le.Uint32(v))
			}
		case unixDiagRQLen:
			if len(v) >= 8 {
				s.RQueue, s.WQueue = le.Uint32(v), le.Uint32(v[4:])
			}
		case unixDiagVFS:
			if len(v) >= 8 {
				s.VFSIno, s.VFSDev = uint64(le.Uint32(v)), le.Uint32(v[4:])
			}
		case unixDiagIcons:
			for ; len(v) >= 4; v = v[4:] {
				s.Icons = append(s.Icons, uint64(le.Uint32(v)))
			}
		case unixDiagShutdown:
			if len(v) >= 1 {
				s.Shutdown = v[0]
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
