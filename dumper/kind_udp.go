package dumper

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// udpKind is a UDP socket (object udp-<ino>): its addresses, options and
// the datagrams queued for reading with their sources, peeked without
// consuming them (SO_PEEK_OFF walks a UDP queue datagram by datagram).
type udpKind struct{ noOps }

func (udpKind) fdKind() string        { return image.FDSocket }
func (udpKind) owns(f *image.FD) bool { return strings.HasPrefix(f.Object, image.ObjUDPSocket+"-") }

func (udpKind) collect(cc *collection, t *image.Task, f *image.FD) error {
	if cc.c.Object(f.Object) != nil {
		return nil
	}
	dup, err := dupFD(t.PID, f.Num)
	if err != nil {
		return err
	}
	defer unix.Close(dup)
	s := &image.UDPSocket{Ino: f.Ino}
	if s.Family, err = unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		return fmt.Errorf("get SO_DOMAIN: %w", err)
	}
	if sa, err := unix.Getsockname(dup); err == nil {
		s.Local = addrPort(sa)
	}
	if sa, err := unix.Getpeername(dup); err == nil {
		s.Remote = addrPort(sa)
	}
	o := &s.Opts
	for _, x := range []struct {
		name       string
		level, opt int
		to         *int
	}{{"SO_REUSEADDR", unix.SOL_SOCKET, unix.SO_REUSEADDR, &o.ReuseAddr}, {"SO_REUSEPORT", unix.SOL_SOCKET, unix.SO_REUSEPORT, &o.ReusePort},
		{"SO_BROADCAST", unix.SOL_SOCKET, unix.SO_BROADCAST, &o.Broadcast}, {"SO_SNDBUF", unix.SOL_SOCKET, unix.SO_SNDBUF, &o.Sndbuf},
		{"SO_RCVBUF", unix.SOL_SOCKET, unix.SO_RCVBUF, &o.Rcvbuf}} {
		if *x.to, err = unix.GetsockoptInt(dup, x.level, x.opt); err != nil {
			return fmt.Errorf("get %s: %w", x.name, err)
		}
	}
	if s.Family == unix.AF_INET6 {
		if o.V6Only, err = unix.GetsockoptInt(dup, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY); err != nil {
			return fmt.Errorf("get IPV6_V6ONLY: %w", err)
		}
	}
	data, err := peekUDP(dup, s)
	if err != nil {
		return &ErrUnsupported{PID: t.PID, FD: f.Num, Kind: err.Error(), What: "UDP " + s.Local.String()}
	}
	cc.c.Objects = append(cc.c.Objects, &image.Object{ID: f.Object, Kind: image.ObjUDPSocket, Info: s.Info(), Data: data})
	return nil
}

// peekUDP reads the datagrams queued on dup without consuming them: with
// SO_PEEK_OFF set, each MSG_PEEK read returns the next datagram; the
// socket's own peek offset is put back.
func peekUDP(dup int, s *image.UDPSocket) ([]byte, error) {
	old, err := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, fmt.Errorf("get SO_PEEK_OFF: %w", err)
	}
	if err := unix.SetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, fmt.Errorf("set SO_PEEK_OFF: %w", err)
	}
	defer unix.SetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_PEEK_OFF, old)
	var data []byte
	buf := make([]byte, 65536)
	for {
		n, _, _, from, err := unix.Recvmsg(dup, buf, nil, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		if err == unix.EAGAIN {
			return data, nil
		}
		if err != nil {
			return nil, fmt.Errorf("peek queued datagrams: %w", err)
		}
		if n > len(buf) {
			return nil, fmt.Errorf("a UDP socket with a queued datagram of %d bytes", n)
		}
		if len(data)+n > maxQueued {
			return nil, fmt.Errorf("a UDP socket with more than %d MiB queued", maxQueued>>20)
		}
		data = append(data, buf[:n]...)
		s.Msgs = append(s.Msgs, image.UDPMsg{Len: n, From: addrPort(from)})
	}
}
