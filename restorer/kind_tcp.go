package restorer

import (
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/netlock"
	"github.com/ckptfs/ckptfs/internal/tcpqueue"
	"github.com/ckptfs/ckptfs/internal/tcprepair"
)

// TCP sockets are all recreated at once, the first time a restored fd
// needs one, in the restorer, and installed in the tasks like any other
// restorer file:
//
//  1. listeners are made as the task holding them (so the socket is its
//     uid's), bound to their address as it and listen again with their
//     backlog;
//  2. established connections are made as their task, then rebuilt in
//     repair mode (internal/tcprepair): sequence numbers, options, window,
//     both queues; nothing is sent;
//  3. connections that were in a listener's accept queue are put back
//     into the new listener's queue (internal/tcpqueue), the program
//     accept()s them; nothing is sent to their peers but ACKs the lock
//     holds back;
//  4. once every connection exists, repair mode is turned off on each
//     (a window probe each) and the bytes never sent are sent;
//  5. the recorded socket options are set.
//
// With --tcp-close an established connection is restored closed: a
// socket that was reset (its first read says ECONNRESET), nothing is sent
// to the old peer; connections not yet accepted are not put back.
type tcpKind struct{ kindBase }

func (tcpKind) check(c *image.Checkpoint, _ *image.Task, f *image.FD) error {
	_, err := image.ParseTCPSocket(c.Object(f.Object), false)
	return err
}

func (tcpKind) open(fs *files, c *image.Checkpoint, _ *image.Task, f *image.FD) (int, error) {
	fd, err := fs.tcpSocket(c, c.Object(f.Object))
	if err != nil {
		return -1, err
	}
	if err := setStatusFlags(fd, f.Flags); err != nil {
		return -1, err
	}
	return fd, nil
}

// tcpBuilt marks in files.objs that the TCP sockets were rebuilt.
const tcpBuilt = "tcp/built"

// tcpSocket returns the restorer's fd for TCP socket object o, rebuilding
// all of the checkpoint's TCP sockets the first time.
func (fs *files) tcpSocket(c *image.Checkpoint, o *image.Object) (int, error) {
	if fd, ok := fs.objs[o.ID]; ok {
		return fd, nil
	}
	if _, built := fs.objs[tcpBuilt]; !built {
		fs.objs[tcpBuilt] = -1
		if err := fs.buildTCP(c); err != nil {
			return -1, err
		}
		if fd, ok := fs.objs[o.ID]; ok {
			return fd, nil
		}
	}
	return -1, fmt.Errorf("TCP socket %s was not recreated", o.ID)
}

// tsock is one TCP socket object and its part in the rebuild.
type tsock struct {
	o     *image.Object
	s     *image.TCPSocket
	st    *tcprepair.State // established, not --tcp-close
	child *tcpqueue.Child  // not yet accepted, not --tcp-close
	owner *image.Task
	fd    int
}

func (u *tsock) String() string {
	s := fmt.Sprintf("TCP socket %s %s", u.o.ID, u.s.Local)
	if u.s.State == image.TCPEstablished {
		s += " -> " + u.s.Remote.String()
	}
	return s
}

func (fs *files) buildTCP(c *image.Checkpoint) error {
	var list []*tsock
	for _, o := range c.Objects {
		if o.Kind != image.ObjTCPSocket {
			continue
		}
		s, err := image.ParseTCPSocket(o, false)
		if err != nil {
			return err
		}
		u := &tsock{o: o, s: s, owner: objectHolder(c, o.ID), fd: -1}
		if s.QueuedIn != "" {
			u.owner = objectHolder(c, s.QueuedIn)
			if l := c.Object(s.QueuedIn); l == nil || l.Kind != image.ObjTCPSocket || !slices.Contains(l.Info, "state: "+image.TCPListen) {
				return fmt.Errorf("TCP socket %s: queued in %s, which is no listening socket of the checkpoint", o.ID, s.QueuedIn)
			}
		}
		if u.owner == nil {
			return fmt.Errorf("TCP socket %s: no task holds it", o.ID)
		}
		switch {
		case s.Conn == nil:
		case s.QueuedIn != "":
			if !fs.tcpClose {
				u.child = queuedChild(s, o)
			}
		case !fs.tcpClose:
			u.st = repairState(s, o)
		}
		list = append(list, u)
	}
	var inj *tcpqueue.Injector
	defer func() {
		if inj != nil {
			inj.Close() // the children made stay
		}
	}()
	putBack := func(u *tsock) error {
		if u.child == nil {
			return nil
		}
		if inj == nil {
			var err error
			if inj, err = tcpqueue.Open(); err != nil {
				return fmt.Errorf("put back a connection not yet accepted: %w", err)
			}
		}
		return inj.Put(*u.child)
	}
	defer unlockTCP(c) // also when the rebuild fails: the peers see a reset then
	unlocked := false
	unlock := func(*tsock) error {
		if unlocked {
			return nil
		}
		unlocked = true
		return unlockTCP(c)
	}
	for _, step := range []func(*tsock) error{fs.tcpListen, fs.tcpRepair, putBack, unlock, fs.tcpResume, fs.tcpClosed, setTCPOpts} {
		for _, u := range list {
			if err := step(u); err != nil {
				return fmt.Errorf("%s: %w", u, err)
			}
		}
	}
	for _, u := range list {
		if u.s.QueuedIn == "" {
			fs.objs[u.o.ID] = u.fd
		}
	}
	return nil
}

// queuedChild is what puts back connection o, not yet accepted.
func queuedChild(s *image.TCPSocket, o *image.Object) *tcpqueue.Child {
	c := s.Conn
	return &tcpqueue.Child{Local: s.Local, Remote: s.Remote, SndNxt: c.SndSeq, RcvNxt: c.RcvSeq, MSS: c.MSS, Wscale: c.Wscale,
		SndWscale: c.SndWscale, RcvWscale: c.RcvWscale, SACK: c.SACK, Timestamps: c.Timestamps, Timestamp: c.Timestamp,
		Window: c.Window[1], Data: s.RecvData(o)}
}

func repairState(s *image.TCPSocket, o *image.Object) *tcprepair.State {
	c := s.Conn
	return &tcprepair.State{SndSeq: c.SndSeq, RcvSeq: c.RcvSeq, MSS: c.MSS, SACK: c.SACK, Timestamps: c.Timestamps,
		Wscale: c.Wscale, SndWscale: c.SndWscale, RcvWscale: c.RcvWscale, Timestamp: c.Timestamp,
		Window:    tcprepair.Window{SndWl1: c.Window[0], SndWnd: c.Window[1], MaxWindow: c.Window[2], RcvWnd: c.Window[3], RcvWup: c.Window[4]},
		SendQueue: s.SendData(o), Unsent: c.Unsent, RecvQueue: s.RecvData(o)}
}

// newTCPSocket makes u's socket as its owner (the socket is its uid's).
func (fs *files) newTCPSocket(u *tsock, then func(fd int) error) error {
	return fs.creds.as(u.owner, func() error {
		fd, err := unix.Socket(u.s.Family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		u.fd = fs.keep(fd)
		if then != nil {
			return then(fd)
		}
		return nil
	})
}

// tcpListen makes a listener: as its owner, IPV6_V6ONLY and SO_REUSEPORT
// set before the bind (they decide what it may share), bound with
// SO_REUSEADDR (set back by setTCPOpts) and listening.
func (fs *files) tcpListen(u *tsock) error {
	if u.s.State != image.TCPListen {
		return nil
	}
	return fs.newTCPSocket(u, func(fd int) error {
		if u.s.Family == unix.AF_INET6 {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, u.s.Opts.V6Only); err != nil {
				return fmt.Errorf("set IPV6_V6ONLY: %w", err)
			}
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, u.s.Opts.ReusePort); err != nil {
			return fmt.Errorf("set SO_REUSEPORT: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fmt.Errorf("set SO_REUSEADDR: %w", err)
		}
		if err := unix.Bind(fd, sockaddr(u.s.Family, u.s.Local)); err != nil {
			return fmt.Errorf("bind %s as uid %d: %w", u.s.Local, u.owner.Creds.UID[3], err)
		}
		if err := unix.Listen(fd, u.s.Backlog); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		return nil
	})
}

// tcpRepair rebuilds an established connection in repair mode.
func (fs *files) tcpRepair(u *tsock) error {
	if u.st == nil {
		return nil
	}
	if err := fs.newTCPSocket(u, nil); err != nil {
		return err
	}
	// Repair mode needs CAP_NET_ADMIN: the restorer's, not the owner's.
	return tcprepair.Restore(u.fd, u.st, sockaddr(u.s.Family, u.s.Local), sockaddr(u.s.Family, u.s.Remote))
}

// tcpResume takes a rebuilt connection out of repair mode, once all are
// rebuilt (so no probe reaches a peer of the tree still being made).
func (fs *files) tcpResume(u *tsock) error {
	if u.st == nil {
		return nil
	}
	return tcprepair.Resume(u.fd, u.st)
}

// tcpClosed makes, for --tcp-close, a connection that was reset: a socket
// connected to a temporary loopback listener whose accepted end is closed
// with SO_LINGER 0 (an RST). The old peer is sent nothing.
func (fs *files) tcpClosed(u *tsock) error {
	if u.s.Conn == nil || u.st != nil || u.s.QueuedIn != "" {
		return nil
	}
	family := u.s.Family
	loop := netip.MustParseAddrPort("127.0.0.1:0")
	if family == unix.AF_INET6 {
		loop = netip.MustParseAddrPort("[::1]:0")
	}
	l, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(l)
	if err := unix.Bind(l, sockaddr(family, loop)); err != nil {
		return fmt.Errorf("bind a loopback listener: %w", err)
	}
	if err := unix.Listen(l, 1); err != nil {
		return err
	}
	addr, err := unix.Getsockname(l)
	if err != nil {
		return err
	}
	if err := fs.newTCPSocket(u, func(fd int) error { return unix.Connect(fd, addr) }); err != nil {
		return fmt.Errorf("connect to a loopback listener: %w", err)
	}
	a, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC)
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	_ = unix.SetsockoptLinger(a, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	unix.Close(a) // an RST: the connection reads ECONNRESET
	return nil
}

// setTCPOpts sets the recorded socket options.
func setTCPOpts(u *tsock) error {
	if u.fd < 0 {
		return nil
	}
	o := u.s.Opts
	for _, x := range []struct {
		name       string
		level, opt int
		force      int
		v          int
	}{{"SO_REUSEADDR", unix.SOL_SOCKET, unix.SO_REUSEADDR, 0, o.ReuseAddr},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 0, o.KeepAlive},
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 0, o.NoDelay},
		{"TCP_DEFER_ACCEPT", unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 0, o.DeferAccept},
		{"SO_SNDBUF", unix.SOL_SOCKET, unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, o.Sndbuf},
		{"SO_RCVBUF", unix.SOL_SOCKET, unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, o.Rcvbuf}} {
		if cur, err := unix.GetsockoptInt(u.fd, x.level, x.opt); err == nil && cur == x.v {
			continue
		}
		opt, v := x.opt, x.v
		if x.force != 0 {
			opt, v = x.force, v/2 // getsockopt reports the doubled size the kernel keeps
		}
		if err := unix.SetsockoptInt(u.fd, x.level, opt, v); err != nil {
			return fmt.Errorf("set %s %d: %w", x.name, x.v, err)
		}
	}
	return nil
}

// sockaddr is ap as a socket address of family (an IPv4 address of an
// IPv6 socket is v4-mapped).
func sockaddr(family int, ap netip.AddrPort) unix.Sockaddr {
	if family == unix.AF_INET6 {
		return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
}

// unlockTCP deletes the nftables tables (internal/netlock) a dump --kill
// made to hold back the packets of the checkpoint's connections to peers
// outside the tree: once their sockets exist again (buildTCP, before they
// leave repair mode), or when the restore fails (Restore). A table
// already gone is no error.
func unlockTCP(c *image.Checkpoint) error {
	done := map[string]bool{}
	for _, o := range c.Objects {
		if o.Kind != image.ObjTCPSocket {
			continue
		}
		s, err := image.ParseTCPSocket(o, false)
		if err != nil || s.Lock == "" || done[s.Lock] {
			continue
		}
		done[s.Lock] = true
		if err := netlock.Unlock("", s.Lock); err != nil {
			return err
		}
	}
	return nil
}
