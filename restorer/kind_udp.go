package restorer

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// UDP sockets are all recreated at once, the first time a restored fd
// needs one: each is made as the task holding it and bound to its address
// (IPV6_V6ONLY, SO_REUSEADDR, SO_REUSEPORT set before the bind); then the
// queued datagrams are sent to it again from their source address: from
// the checkpoint's socket bound there, else from a temporary socket bound
// to it (a source whose port is taken by a socket outside the checkpoint
// makes the restore fail, naming it); then connected sockets connect (after
// the requeue: a connected socket takes datagrams from its peer only) and
// the buffer sizes are set.
type udpKind struct{ kindBase }

func (udpKind) check(c *image.Checkpoint, _ *image.Task, f *image.FD) error {
	_, err := image.ParseUDPSocket(c.Object(f.Object), false)
	return err
}

func (udpKind) open(fs *files, c *image.Checkpoint, _ *image.Task, f *image.FD) (int, error) {
	o := c.Object(f.Object)
	if _, built := fs.objs[udpBuilt]; !built {
		fs.objs[udpBuilt] = -1
		if err := fs.buildUDP(c); err != nil {
			return -1, err
		}
	}
	fd, ok := fs.objs[o.ID]
	if !ok {
		return -1, fmt.Errorf("UDP socket %s was not recreated", o.ID)
	}
	if err := setStatusFlags(fd, f.Flags); err != nil {
		return -1, err
	}
	return fd, nil
}

const udpBuilt = "udp/built"

type usockUDP struct {
	o     *image.Object
	s     *image.UDPSocket
	owner *image.Task
	fd    int
}

func (u *usockUDP) String() string { return fmt.Sprintf("UDP socket %s %s", u.o.ID, u.s.Local) }

func (fs *files) buildUDP(c *image.Checkpoint) error {
	var list []*usockUDP
	bound := map[netip.AddrPort]*usockUDP{}
	for _, o := range c.Objects {
		if o.Kind != image.ObjUDPSocket {
			continue
		}
		s, err := image.ParseUDPSocket(o, false)
		if err != nil {
			return err
		}
		u := &usockUDP{o: o, s: s, owner: objectHolder(c, o.ID), fd: -1}
		if u.owner == nil {
			return fmt.Errorf("UDP socket %s: no task holds it", o.ID)
		}
		list = append(list, u)
		if s.Local.Port() != 0 {
			bound[unmapped(s.Local)] = u
		}
	}
	for _, step := range []func(*usockUDP) error{fs.udpBind, func(u *usockUDP) error { return fs.udpRequeue(u, bound) }, fs.udpConnect, setUDPOpts} {
		for _, u := range list {
			if err := step(u); err != nil {
				return fmt.Errorf("%s: %w", u, err)
			}
		}
	}
	for _, u := range list {
		fs.objs[u.o.ID] = u.fd
	}
	return nil
}

func unmapped(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

func (fs *files) udpBind(u *usockUDP) error {
	return fs.creds.as(u.owner, func() error {
		fd, err := unix.Socket(u.s.Family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		u.fd = fs.keep(fd)
		if u.s.Family == unix.AF_INET6 {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, u.s.Opts.V6Only); err != nil {
				return fmt.Errorf("set IPV6_V6ONLY: %w", err)
			}
		}
		for _, o := range []struct {
			name string
			opt  int
			v    int
		}{{"SO_REUSEADDR", unix.SO_REUSEADDR, u.s.Opts.ReuseAddr}, {"SO_REUSEPORT", unix.SO_REUSEPORT, u.s.Opts.ReusePort},
			{"SO_BROADCAST", unix.SO_BROADCAST, u.s.Opts.Broadcast}} {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.opt, o.v); err != nil {
				return fmt.Errorf("set %s: %w", o.name, err)
			}
		}
		if u.s.Local.Port() == 0 {
			return nil // never bound
		}
		if err := unix.Bind(fd, sockaddr(u.s.Family, u.s.Local)); err != nil {
			return fmt.Errorf("bind %s as uid %d: %w", u.s.Local, u.owner.Creds.UID[3], err)
		}
		return nil
	})
}

// udpRequeue sends u's queued datagrams to it again from their sources.
func (fs *files) udpRequeue(u *usockUDP, bound map[netip.AddrPort]*usockUDP) error {
	if len(u.s.Msgs) == 0 {
		return nil
	}
	if err := unix.SetsockoptInt(u.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 2*len(u.o.Data)+(256<<10)); err != nil {
		return fmt.Errorf("grow the receive buffer: %w", err)
	}
	off := 0
	temps := map[netip.AddrPort]int{}
	defer func() {
		for _, fd := range temps {
			unix.Close(fd)
		}
	}()
	for _, m := range u.s.Msgs {
		data := u.o.Data[off : off+m.Len]
		off += m.Len
		src := unmapped(m.From)
		from := -1
		if s := bound[src]; s != nil && s.fd >= 0 {
			from = s.fd
		} else if fd, ok := temps[src]; ok {
			from = fd
		} else {
			family := unix.AF_INET
			if src.Addr().Is6() {
				family = unix.AF_INET6
			}
			fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			temps[src] = fd
			if err := unix.Bind(fd, sockaddr(family, src)); err != nil {
				return fmt.Errorf("a datagram queued from %s: bind a socket there to send it again: %w", src, err)
			}
			from = fd
		}
		dst := u.s.Local
		if dst.Addr().IsUnspecified() {
			if src.Addr().Is4() {
				dst = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), dst.Port())
			} else {
				dst = netip.AddrPortFrom(netip.IPv6Loopback(), dst.Port())
			}
		}
		dst = unmapped(dst)
		family := unix.AF_INET
		if !src.Addr().Is4() {
			family = unix.AF_INET6
		}
		if s := bound[src]; s != nil && s.fd == from && s.s.Family == unix.AF_INET6 {
			family = unix.AF_INET6 // a dual-stack sender: v4-mapped destination
		}
		if err := unix.Sendto(from, data, 0, sockaddr(family, dst)); err != nil {
			return fmt.Errorf("requeue a %d-byte datagram from %s: %w", len(data), src, err)
		}
	}
	return nil
}

func (fs *files) udpConnect(u *usockUDP) error {
	if !u.s.Remote.IsValid() {
		return nil
	}
	if err := fs.creds.as(u.owner, func() error { return unix.Connect(u.fd, sockaddr(u.s.Family, u.s.Remote)) }); err != nil {
		return fmt.Errorf("connect %s: %w", u.s.Remote, err)
	}
	return nil
}

func setUDPOpts(u *usockUDP) error {
	for _, o := range []struct {
		name          string
		get, force, v int
	}{{"SO_SNDBUF", unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, u.s.Opts.Sndbuf}, {"SO_RCVBUF", unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, u.s.Opts.Rcvbuf}} {
		if cur, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, o.get); err == nil && cur == o.v {
			continue
		}
		if err := unix.SetsockoptInt(u.fd, unix.SOL_SOCKET, o.force, o.v/2); err != nil {
			return fmt.Errorf("set %s %d: %w", o.name, o.v, err)
		}
	}
	return nil
}
