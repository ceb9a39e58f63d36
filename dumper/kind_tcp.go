package dumper

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/netlock"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/tcprepair"
)

// tcpKind is a TCP socket (object tcp-<ino>): a listener with its
// options, or with --tcp-established a connection read in repair mode
// (internal/tcprepair). Sockets in other states (connecting, closing,
// half-closed, neither bound nor connected) are refused by name, and so is
// a listener with connections not yet accepted.
type tcpKind struct{ noOps }

func (tcpKind) fdKind() string            { return image.FDSocket }
func (tcpKind) owns(f *image.FD) bool     { return strings.HasPrefix(f.Object, image.ObjTCPSocket+"-") }
func (tcpKind) dump(int, *image.FD) error { return nil }

// tcpStates names the kernel's TCP states (include/net/tcp_states.h).
var tcpStates = map[int]string{1: "ESTABLISHED", 2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT1", 5: "FIN-WAIT2",
	6: "TIME-WAIT", 7: "CLOSE", 8: "CLOSE-WAIT", 9: "LAST-ACK", 10: "LISTEN", 11: "CLOSING"}

const (
	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10
)

// liveTCP is what the kernel says of a TCP socket.
type liveTCP struct {
	state         int
	family        int
	local, remote netip.AddrPort
	acceptQueue   int // listening: connections not yet accepted
	backlog       int // listening: listen's argument
}

func (l *liveTCP) String() string {
	s := "TCP " + l.local.String()
	if l.state != tcpListen && l.state != tcpClose {
		s += " -> " + l.remote.String()
	}
	return s + " " + tcpStates[l.state]
}

// inspectTCP reads the state of TCP socket dup.
func inspectTCP(dup int) (*liveTCP, error) {
	info, err := unix.GetsockoptTCPInfo(dup, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return nil, fmt.Errorf("get TCP_INFO: %w", err)
	}
	l := &liveTCP{state: int(info.State)}
	if l.family, err = unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		return nil, fmt.Errorf("get SO_DOMAIN: %w", err)
	}
	if sa, err := unix.Getsockname(dup); err == nil {
		l.local = addrPort(sa)
	}
	if sa, err := unix.Getpeername(dup); err == nil {
		l.remote = addrPort(sa)
	}
	if l.state == tcpListen {
		// tcp_info of a listener: unacked is the accept queue, sacked the backlog.
		l.acceptQueue, l.backlog = int(info.Unacked), int(info.Sacked)
	}
	return l, nil
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

// refuse refuses TCP sockets no restore could give back: those neither
// listening nor established, and listeners with connections waiting.
func (tcpKind) refuse(pid int, f *image.FD) error {
	dup, err := dupFD(pid, f.Num)
	if err != nil {
		return err
	}
	defer unix.Close(dup)
	l, err := inspectTCP(dup)
	if err != nil {
		return fmt.Errorf("TCP socket fd %d of %d: %w", f.Num, pid, err)
	}
	return refuseTCP(pid, f, l, true) // the queue is looked at once the tree is frozen (collect)
}

// refuseTCP refuses what no restore gives back; queueOK says whether
// connections not yet accepted can be taken (dump --kill --tcp-established).
func refuseTCP(pid int, f *image.FD, l *liveTCP, queueOK bool) error {
	refuse := func(kind string) error { return &ErrUnsupported{PID: pid, FD: f.Num, Kind: kind, What: l.String()} }
	switch {
	case l.state == tcpListen && l.acceptQueue > 0 && !queueOK:
		return refuse(fmt.Sprintf("a TCP socket listening with %d connections not yet accepted: "+
			"dump --kill --tcp-established takes them along, or let the program accept them first", l.acceptQueue))
	case l.state == tcpListen, l.state == tcpEstablished:
		return nil
	case l.state == tcpClose:
		return refuse("a TCP socket neither listening nor connected")
	default:
		return refuse("a TCP socket in state " + tcpStates[l.state] + " (half-closed, closing or connecting)")
	}
}

// dupFD duplicates fd n of pid with pidfd_getfd.
func dupFD(pid, n int) (int, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, n, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd fd %d of %d: %w", n, pid, err)
	}
	return dup, nil
}

// collect records the TCP socket fd f of task t refers to, once per
// checkpoint: an established connection is put in repair mode and stays
// so, held by the dump (cc.tcp), until the dump ends: with --kill its
// close then sends nothing, else repair mode is turned off again.
func (tcpKind) collect(cc *collection, t *image.Task, f *image.FD) error {
	id := f.Object
	if cc.c.Object(id) != nil {
		return nil
	}
	dup, err := dupFD(t.PID, f.Num)
	if err != nil {
		return err
	}
	kept := false
	defer func() {
		if !kept {
			unix.Close(dup)
		}
	}()
	l, err := inspectTCP(dup)
	if err != nil {
		return err
	}
	if err := refuseTCP(t.PID, f, l, cc.tcp.kill && cc.tcp.established); err != nil {
		return err
	}
	s := &image.TCPSocket{Ino: f.Ino, Family: l.family, Local: l.local, Remote: l.remote, Backlog: l.backlog}
	if s.Opts, err = tcpOptions(dup, l.family); err != nil {
		return err
	}
	var data []byte
	switch l.state {
	case tcpListen:
		s.State = image.TCPListen
		cc.tcp.listeners = append(cc.tcp.listeners, heldListener{id: id, pid: t.PID, fd: f.Num, family: l.family, local: l.local})
	case tcpEstablished:
		s.State = image.TCPEstablished
		if !cc.tcp.established {
			return &ErrUnsupported{PID: t.PID, FD: f.Num, Kind: "a TCP socket connected (an established connection: dump it with --tcp-established)", What: l.String()}
		}
		if err := tcprepair.SetRepair(dup, true); err != nil {
			return fmt.Errorf("%s: %w", l, err)
		}
		kept = true
		cc.tcp.held = append(cc.tcp.held, dup)
		cc.tcp.conns = append(cc.tcp.conns, heldConn{id: id, pid: t.PID, local: l.local, remote: l.remote})
		st, err := tcprepair.Dump(dup)
		if err != nil {
			return fmt.Errorf("%s: %w", l, err)
		}
		s.Conn = &image.TCPConn{SndSeq: st.SndSeq, RcvSeq: st.RcvSeq, MSS: st.MSS, SACK: st.SACK, Timestamps: st.Timestamps,
			Wscale: st.Wscale, SndWscale: st.SndWscale, RcvWscale: st.RcvWscale, Timestamp: st.Timestamp,
			Window:    [5]uint32{st.Window.SndWl1, st.Window.SndWnd, st.Window.MaxWindow, st.Window.RcvWnd, st.Window.RcvWup},
			SendQueue: len(st.SendQueue), Unsent: st.Unsent, RecvQueue: len(st.RecvQueue)}
		data = append(st.SendQueue, st.RecvQueue...)
	}
	cc.c.Objects = append(cc.c.Objects, &image.Object{ID: id, Kind: image.ObjTCPSocket, Info: s.Info(), Data: data})
	return nil
}

// tcpOptions reads the socket options a restore sets again.
func tcpOptions(fd, family int) (image.TCPOpts, error) {
	var o image.TCPOpts
	for _, x := range []struct {
		name       string
		level, opt int
		to         *int
		onlyFamily int
	}{{"SO_REUSEADDR", unix.SOL_SOCKET, unix.SO_REUSEADDR, &o.ReuseAddr, 0},
		{"SO_REUSEPORT", unix.SOL_SOCKET, unix.SO_REUSEPORT, &o.ReusePort, 0},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, &o.KeepAlive, 0},
		{"SO_SNDBUF", unix.SOL_SOCKET, unix.SO_SNDBUF, &o.Sndbuf, 0},
		{"SO_RCVBUF", unix.SOL_SOCKET, unix.SO_RCVBUF, &o.Rcvbuf, 0},
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, &o.NoDelay, 0},
		{"TCP_DEFER_ACCEPT", unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, &o.DeferAccept, 0},
		{"IPV6_V6ONLY", unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, &o.V6Only, unix.AF_INET6}} {
		if x.onlyFamily != 0 && x.onlyFamily != family {
			continue
		}
		v, err := unix.GetsockoptInt(fd, x.level, x.opt)
		if err != nil {
			return o, fmt.Errorf("get %s: %w", x.name, err)
		}
		*x.to = v
	}
	return o, nil
}

// tcpHold is the dump's hold on the connections it put in repair mode.
type tcpHold struct {
	established bool  // --tcp-established
	kill        bool  // --kill
	held        []int // duplicates of the connections, in repair mode
	conns       []heldConn
	locks       []string // the lock tables made (lockOutside)
	netns       string   // their network namespace
	listeners   []heldListener
	queued      []queuedConn // taken from the listeners' queues (kind_tcpqueue.go)
}

type heldConn struct {
	id            string
	pid           int
	local, remote netip.AddrPort
}

// lockOutside holds back, with an nftables table (internal/netlock), the
// packets of the connections whose peer is not in the tree, before a
// --kill closes them: the peer's kernel then sees no RST while the
// program is down, and the restore deletes the table. Each such
// connection's info names the table.
func (h *tcpHold) lockOutside(c *image.Checkpoint) error {
	return h.lockOutsideOf(c, h.conns)
}

// lockOutsideOf locks those of these whose peer is not in the tree.
func (h *tcpHold) lockOutsideOf(c *image.Checkpoint, these []heldConn) error {
	inTree := map[[2]netip.AddrPort]bool{}
	for _, k := range h.conns {
		inTree[[2]netip.AddrPort{k.local, k.remote}] = true
	}
	var outside []heldConn
	var conns []netlock.Conn
	for _, k := range these {
		if !inTree[[2]netip.AddrPort{k.remote, k.local}] {
			outside = append(outside, k)
			conns = append(conns, netlock.Conn{Local: k.local, Remote: k.remote})
		}
	}
	if len(outside) == 0 {
		return nil
	}
	netns := proc.Path(outside[0].pid, "ns/net")
	want, err := os.Stat(netns)
	if err != nil {
		return fmt.Errorf("network namespace of %d: %w", outside[0].pid, err)
	}
	for _, k := range outside[1:] {
		if st, err := os.Stat(proc.Path(k.pid, "ns/net")); err != nil || !os.SameFile(st, want) {
			return &ErrUnsupported{PID: k.pid, FD: -1, Kind: "TCP connections in several network namespaces", What: k.local.String() + " -> " + k.remote.String()}
		}
	}
	name := fmt.Sprintf("%s%d-%d", netlock.Prefix, os.Getpid(), time.Now().UnixNano())
	if err := netlock.Lock(netns, name, conns); err != nil {
		return err
	}
	h.locks, h.netns = append(h.locks, name), netns
	for _, k := range outside {
		o := c.Object(k.id)
		s, err := image.ParseTCPSocket(o, true)
		if err != nil {
			return err
		}
		s.Lock = name
		o.Info = s.Info()
	}
	return nil
}

// closeSilently closes the held connections in repair mode (the tree is
// dead: the close sends nothing, no FIN, no RST).
func (h *tcpHold) closeSilently() {
	for _, fd := range h.held {
		unix.Close(fd)
	}
	for _, q := range h.queued {
		unix.Close(q.fd)
	}
	h.held, h.queued = nil, nil
}

// resume turns repair mode off again on the held connections (the tree
// runs on, or the dump failed) and closes the duplicates; the lock table
// of a failed --kill dump is deleted.
func (h *tcpHold) resume() {
	failed := len(h.held) > 0 || len(h.queued) > 0 // else none, or closed by --kill
	h.putBack()                                    // kind_tcpqueue.go: while the locks hold
	if failed {
		for _, name := range h.locks {
			_ = netlock.Unlock(h.netns, name)
		}
	}
	h.locks = nil
	for _, fd := range h.held {
		_ = tcprepair.SetRepair(fd, false)
		unix.Close(fd)
	}
	h.held = nil
}

// precheckTCP refuses, before the tree is seized, established connections
// unless --tcp-established was given (fds maps pid to its fds).
func precheckTCP(fds map[int][]*image.FD, established bool) error {
	if established {
		return nil
	}
	for _, pid := range sortedPids(fds) {
		for _, f := range fds[pid] {
			if !(tcpKind{}).owns(f) {
				continue
			}
			dup, err := dupFD(pid, f.Num)
			if err != nil {
				return err
			}
			l, err := inspectTCP(dup)
			unix.Close(dup)
			if err != nil {
				return err
			}
			if l.state == tcpEstablished {
				return &ErrUnsupported{PID: pid, FD: f.Num, Kind: "a TCP socket connected (an established connection: dump it with --tcp-established)", What: l.String()}
			}
		}
	}
	return nil
}

func sortedPids(fds map[int][]*image.FD) []int {
	pids := make([]int, 0, len(fds))
	for pid := range fds {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	return pids
}
