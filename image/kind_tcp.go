package image

import (
	"fmt"
	"math"
	"net/netip"

	"strings"
)

// ObjTCPSocket is a TCP socket (objects/tcp-<ino>): Info TCPSocket; Data
// the send queue then the receive queue of an established connection.
const ObjTCPSocket = "tcp"

// TCPSocketID names the object of the TCP socket with inode ino.
func TCPSocketID(ino uint64) string { return "tcp-" + u64(ino) }

// TCP states a checkpoint holds, spelled as /proc/net/tcp users know them.
const (
	TCPListen      = "LISTEN"
	TCPEstablished = "ESTABLISHED"
)

// TCPSocket is the info of a TCP socket, one object however many fds and
// tasks hold it. docs/tree-format.md "TCP sockets" says what each line
// means. Lines, in this order:
//
//	ino: 4242                      the socket's inode
//	family: 2                      AF_INET 2, AF_INET6 10
//	state: LISTEN                  LISTEN or ESTABLISHED
//	local: 127.0.0.1:6379          bound address ([::1]:80 for IPv6)
//	remote: 127.0.0.1:40112        established: the peer's address
//	queued-in: tcp-4241            a connection not yet accepted: the listener whose queue it was in (ino 0)
//	backlog: 511                   listening: listen's argument
//	v6only: 0                      IPV6_V6ONLY (IPv6 only)
//	reuseaddr: 1                   socket options, as getsockopt says
//	reuseport: 0
//	keepalive: 0
//	nodelay: 1
//	defer-accept: 0
//	sndbuf: 2626560
//	rcvbuf: 131072
//	snd-seq: 1234                  established (TCP_REPAIR): write_seq
//	rcv-seq: 5678                  rcv_nxt
//	mss: 65483                     TCP_MAXSEG
//	sack: 1                        negotiated options
//	timestamps: 1
//	wscale: 7 7                    send and receive window scale ("-": none)
//	timestamp: 123456              the connection's timestamp clock
//	window: 1 2 3 4 5              snd_wl1 snd_wnd max_window rcv_wnd rcv_wup
//	send-queue: 100                bytes of data: sent and not acknowledged, then unsent
//	unsent: 0                      of those, never sent
//	recv-queue: 20                 bytes of data after the send queue: received, not read
//	lock: ckptfs-lock-1-2          the nftables table holding its packets back (dump --kill, peer outside)
type TCPSocket struct {
	Ino           uint64
	Family        int
	State         string
	Local, Remote netip.AddrPort
	Backlog       int
	Opts          TCPOpts
	Conn          *TCPConn // ESTABLISHED only
	QueuedIn      string   // not yet accepted: the listener's object (its accept queue), "" else
	Lock          string   // nftables table dropping its packets until the restore ("": none)
}

// TCPOpts are the socket options a restore sets again.
type TCPOpts struct {
	V6Only, ReuseAddr, ReusePort, KeepAlive, NoDelay int
	DeferAccept, Sndbuf, Rcvbuf                      int
}

// TCPConn is the repair state of an established connection.
type TCPConn struct {
	SndSeq, RcvSeq       uint32
	MSS                  int
	SACK, Timestamps     bool
	Wscale               bool
	SndWscale, RcvWscale int
	Timestamp            uint32
	Window               [5]uint32
	SendQueue, Unsent    int
	RecvQueue            int
}

// Info renders s as its info lines.
func (s *TCPSocket) Info() []string {
	var w lineWriter
	w.add("ino", "%d", s.Ino)
	w.add("family", "%d", s.Family)
	w.add("state", "%s", s.State)
	w.add("local", "%s", s.Local)
	if s.State == TCPEstablished {
		w.add("remote", "%s", s.Remote)
	}
	if s.QueuedIn != "" {
		w.add("queued-in", "%s", s.QueuedIn)
	}
	if s.State == TCPListen {
		w.add("backlog", "%d", s.Backlog)
	}
	o := s.Opts
	if s.Family == afInet6 {
		w.add("v6only", "%d", o.V6Only)
	}
	for _, x := range []struct {
		k string
		v int
	}{{"reuseaddr", o.ReuseAddr}, {"reuseport", o.ReusePort}, {"keepalive", o.KeepAlive}, {"nodelay", o.NoDelay},
		{"defer-accept", o.DeferAccept}, {"sndbuf", o.Sndbuf}, {"rcvbuf", o.Rcvbuf}} {
		w.add(x.k, "%d", x.v)
	}
	if c := s.Conn; c != nil {
		w.add("snd-seq", "%d", c.SndSeq)
		w.add("rcv-seq", "%d", c.RcvSeq)
		w.add("mss", "%d", c.MSS)
		w.add("sack", "%d", b01(c.SACK))
		w.add("timestamps", "%d", b01(c.Timestamps))
		if c.Wscale {
			w.add("wscale", "%d %d", c.SndWscale, c.RcvWscale)
		} else {
			w.add("wscale", "-")
		}
		w.add("timestamp", "%d", c.Timestamp)
		w.add("window", "%d %d %d %d %d", c.Window[0], c.Window[1], c.Window[2], c.Window[3], c.Window[4])
		w.add("send-queue", "%d", c.SendQueue)
		w.add("unsent", "%d", c.Unsent)
		w.add("recv-queue", "%d", c.RecvQueue)
	}
	if s.Lock != "" {
		w.add("lock", "%s", s.Lock)
	}
	return w
}

const (
	afInet  = 2
	afInet6 = 10
)

func b01(b bool) int {
	if b {
		return 1
	}
	return 0
}

var tcpKeys = []string{"ino", "family", "state", "local", "remote", "queued-in", "backlog", "v6only", "reuseaddr", "reuseport",
	"keepalive", "nodelay", "defer-accept", "sndbuf", "rcvbuf", "snd-seq", "rcv-seq", "mss", "sack", "timestamps",
	"wscale", "timestamp", "window", "send-queue", "unsent", "recv-queue", "lock"}

// ParseTCPSocket reads and validates the info of TCP socket object o
// against its data.
func ParseTCPSocket(o *Object, strict bool) (*TCPSocket, error) {
	k := readKindLines("object "+o.ID, o.Info, tcpKeys, nil, strict)
	s := &TCPSocket{Ino: k.uint("ino", 10, 64), Family: int(k.int("family", 0, 64)), State: k.str("state")}
	s.Local = k.addrPort("local", s.Family)
	s.Opts = TCPOpts{V6Only: int(k.intOpt("v6only", 0, 1)), ReuseAddr: int(k.int("reuseaddr", 0, 1)),
		ReusePort: int(k.int("reuseport", 0, 1)), KeepAlive: int(k.int("keepalive", 0, 1)), NoDelay: int(k.int("nodelay", 0, 1)),
		DeferAccept: int(k.int("defer-accept", 0, math.MaxInt32)), Sndbuf: int(k.int("sndbuf", 0, math.MaxInt32)),
		Rcvbuf: int(k.int("rcvbuf", 0, math.MaxInt32))}
	if k.err == nil && s.Family != afInet && s.Family != afInet6 {
		k.fail("family %d is not AF_INET (2) or AF_INET6 (10)", s.Family)
	}
	switch s.State {
	case TCPListen:
		s.Backlog = int(k.int("backlog", 0, math.MaxInt32))
		if k.err == nil && len(o.Data) != 0 {
			k.fail("a listening socket with %d bytes of data", len(o.Data))
		}
	case TCPEstablished:
		s.Remote = k.addrPort("remote", s.Family)
		c := &TCPConn{SndSeq: uint32(k.uint("snd-seq", 10, 32)), RcvSeq: uint32(k.uint("rcv-seq", 10, 32)),
			MSS: int(k.int("mss", 1, 65535)), SACK: k.flag("sack"), Timestamps: k.flag("timestamps"),
			Timestamp: uint32(k.uint("timestamp", 10, 32)), SendQueue: int(k.int("send-queue", 0, math.MaxInt32)),
			Unsent: int(k.int("unsent", 0, math.MaxInt32)), RecvQueue: int(k.int("recv-queue", 0, math.MaxInt32))}
		if ws := k.str("wscale"); ws != "-" && k.err == nil {
			c.Wscale = true
			if _, err := fmt.Sscanf(ws, "%d %d", &c.SndWscale, &c.RcvWscale); err != nil || c.SndWscale < 0 || c.SndWscale > 14 ||
				c.RcvWscale < 0 || c.RcvWscale > 14 {
				k.fail("wscale: %.30q is not two scales 0..14", ws)
			}
		}
		win := strings.Fields(k.str("window"))
		if k.err == nil && len(win) != 5 {
			k.fail("window: want 5 numbers, got %d", len(win))
		}
		for i := 0; k.err == nil && i < 5; i++ {
			c.Window[i] = uint32(k.parseUint("window", win[i], 10, 32))
		}
		if k.err == nil && (c.Unsent > c.SendQueue || c.SendQueue+c.RecvQueue != len(o.Data)) {
			k.fail("queues of %d (%d unsent) and %d bytes, data of %d", c.SendQueue, c.Unsent, c.RecvQueue, len(o.Data))
		}
		s.Conn = c
		if s.QueuedIn = k.opt("queued-in"); k.err == nil && s.QueuedIn != "" && !tcpObjectID(s.QueuedIn) {
			k.fail("queued-in: %.40q is not tcp-<inode>", s.QueuedIn)
		}
		if k.err == nil && s.QueuedIn != "" && (c.SendQueue != 0 || s.Ino != 0) {
			k.fail("a connection not yet accepted with inode %d and a send queue of %d bytes", s.Ino, c.SendQueue)
		}
	default:
		k.fail("state %.20q is not LISTEN or ESTABLISHED", s.State)
	}
	if s.Lock = k.opt("lock"); s.Lock != "" && !lockName(s.Lock) {
		k.fail("lock %.60q is not ckptfs-lock-<digits and dashes>", s.Lock)
	}
	return s, k.err
}

// addrPort reads an address:port of family.
func (k *kindLines) addrPort(key string, family int) netip.AddrPort {
	v := k.str(key)
	if k.err != nil {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(v)
	if err != nil {
		k.fail("%s: %.50q is not address:port", key, v)
	} else if family == afInet && !ap.Addr().Is4() || family == afInet6 && !ap.Addr().Is6() {
		k.fail("%s: %s is not of family %d", key, v, family)
	}
	return ap
}

// SendData and RecvData split the object's data into the queues.
func (s *TCPSocket) SendData(o *Object) []byte { return o.Data[:s.Conn.SendQueue] }
func (s *TCPSocket) RecvData(o *Object) []byte { return o.Data[s.Conn.SendQueue:] }

func parseTCPInfo(o *Object, strict bool) ([]string, error) {
	s, err := ParseTCPSocket(o, strict)
	return s.Info(), err
}

// tcpObjectID says whether id is tcp-<inode>.
func tcpObjectID(id string) bool {
	rest, ok := strings.CutPrefix(id, "tcp-")
	if !ok || rest == "" || len(rest) > 20 {
		return false
	}
	for _, r := range rest {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// TCPQueuedID names the object of the n-th connection (from 0) not yet
// accepted in the queue of the listener of object listener.
func TCPQueuedID(listener string, n int) string { return fmt.Sprintf("%s-q%d", listener, n) }

// lockName says whether name is a lock table the dumper makes
// (internal/netlock: ckptfs-lock-<pid>-<nanoseconds>).
func lockName(name string) bool {
	rest, ok := strings.CutPrefix(name, "ckptfs-lock-")
	if !ok || rest == "" || len(rest) > 64 {
		return false
	}
	for _, r := range rest {
		if (r < '0' || r > '9') && r != '-' {
			return false
		}
	}
	return true
}
