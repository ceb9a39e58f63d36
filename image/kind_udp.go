package image

import (
	"math"
	"net/netip"
	"strconv"
	"strings"
)

// ObjUDPSocket is a UDP socket (objects/udp-<ino>): Info UDPSocket; Data
// the datagrams queued for reading, one after another.
const ObjUDPSocket = "udp"

// UDPSocketID names the object of the UDP socket with inode ino.
func UDPSocketID(ino uint64) string { return "udp-" + u64(ino) }

// UDPSocket is the info of a UDP socket, one object however many fds and
// tasks hold it. docs/tree-format.md "UDP sockets" says what each line
// means. Lines, in this order:
//
//	ino: 4242
//	family: 2                      AF_INET 2, AF_INET6 10
//	local: 127.0.0.1:5353          bound address (port 0: not bound)
//	remote: 127.0.0.1:40112        connected: the peer ("-": none)
//	v6only: 0                      socket options (v6only: IPv6 only)
//	reuseaddr: 0
//	reuseport: 0
//	broadcast: 0
//	sndbuf: 212992
//	rcvbuf: 212992
//	msg: 5 127.0.0.1:40112         one per queued datagram: length and source
type UDPSocket struct {
	Ino           uint64
	Family        int
	Local, Remote netip.AddrPort // Remote invalid: not connected
	Opts          UDPOpts
	Msgs          []UDPMsg
}

// UDPOpts are the socket options a restore sets again.
type UDPOpts struct {
	V6Only, ReuseAddr, ReusePort, Broadcast, Sndbuf, Rcvbuf int
}

// UDPMsg is one queued datagram.
type UDPMsg struct {
	Len  int
	From netip.AddrPort
}

// Info renders s as its info lines.
func (s *UDPSocket) Info() []string {
	var w lineWriter
	w.add("ino", "%d", s.Ino)
	w.add("family", "%d", s.Family)
	w.add("local", "%s", s.Local)
	if s.Remote.IsValid() {
		w.add("remote", "%s", s.Remote)
	} else {
		w.add("remote", "-")
	}
	o := s.Opts
	if s.Family == afInet6 {
		w.add("v6only", "%d", o.V6Only)
	}
	w.add("reuseaddr", "%d", o.ReuseAddr)
	w.add("reuseport", "%d", o.ReusePort)
	w.add("broadcast", "%d", o.Broadcast)
	w.add("sndbuf", "%d", o.Sndbuf)
	w.add("rcvbuf", "%d", o.Rcvbuf)
	for _, m := range s.Msgs {
		w.add("msg", "%d %s", m.Len, m.From)
	}
	return w
}

var udpKeys = []string{"ino", "family", "local", "remote", "v6only", "reuseaddr", "reuseport", "broadcast", "sndbuf", "rcvbuf", "msg"}

// ParseUDPSocket reads and validates the info of UDP socket object o
// against its data.
func ParseUDPSocket(o *Object, strict bool) (*UDPSocket, error) {
	k := readKindLines("object "+o.ID, o.Info, udpKeys, []string{"msg"}, strict)
	s := &UDPSocket{Ino: k.uint("ino", 10, 64), Family: int(k.int("family", 0, 64))}
	if k.err == nil && s.Family != afInet && s.Family != afInet6 {
		k.fail("family %d is not AF_INET (2) or AF_INET6 (10)", s.Family)
	}
	s.Local = k.addrPort("local", s.Family)
	if k.str("remote") != "-" {
		s.Remote = k.addrPort("remote", s.Family)
	}
	s.Opts = UDPOpts{V6Only: int(k.intOpt("v6only", 0, 1)), ReuseAddr: int(k.int("reuseaddr", 0, 1)),
		ReusePort: int(k.int("reuseport", 0, 1)), Broadcast: int(k.int("broadcast", 0, 1)),
		Sndbuf: int(k.int("sndbuf", 0, math.MaxInt32)), Rcvbuf: int(k.int("rcvbuf", 0, math.MaxInt32))}
	total := 0
	for _, v := range k.all("msg") {
		ls, from, _ := strings.Cut(v, " ")
		n, err := strconv.Atoi(ls)
		ap, aerr := netip.ParseAddrPort(from)
		if err != nil || aerr != nil || n < 0 || n > 65535 || total+n > len(o.Data) {
			k.fail("bad message line %.60q", "msg: "+v)
			break
		}
		total += n
		s.Msgs = append(s.Msgs, UDPMsg{Len: n, From: ap})
	}
	if k.err == nil && total != len(o.Data) {
		k.fail("messages of %d bytes, data of %d", total, len(o.Data))
	}
	return s, k.err
}

func parseUDPInfo(o *Object, strict bool) ([]string, error) {
	s, err := ParseUDPSocket(o, strict)
	return s.Info(), err
}
