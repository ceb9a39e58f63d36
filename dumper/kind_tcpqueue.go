package dumper

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/tcpqueue"
	"github.com/ckptfs/ckptfs/internal/tcprepair"
)

// Connections in a listener's accept queue (fully established, not yet
// accept()ed by the program) can only be read by taking them from the
// queue: the dump accept()s them on a duplicate of the listener and
// reads them in repair mode, like established connections. It does so
// only with --kill --tcp-established, at the point of no return: after
// the memory is stored, just before the commit. If the dump fails after
// that (the lock or the commit), they are put back into their listener's
// queue (internal/tcpqueue, the way a restore puts them back) before the
// tree runs on; a connection whose peer closed it (CLOSE-WAIT, found with
// sock_diag before anything is taken) is refused. Each becomes an
// ESTABLISHED tcp object "queued-in" its listener's object.

// heldListener is a listener of the tree, to take its queue from.
type heldListener struct {
	id     string
	pid    int
	fd     int
	family int
	local  netip.AddrPort
}

// queuedConn is a connection taken from a listener's queue, in repair
// mode, and what puts it back.
type queuedConn struct {
	id    string // its object
	pid   int    // the listener's task
	fd    int
	netns string
	child tcpqueue.Child
}

// takeQueued takes the connections of every listener's queue (see
// above) and locks those whose peer is outside the tree.
func (h *tcpHold) takeQueued(c *image.Checkpoint) error {
	if !h.kill || !h.established {
		return nil
	}
	checked := false
	for _, ln := range h.listeners {
		if n, err := queueLength(ln); err != nil || n == 0 {
			if err != nil {
				return err
			}
			continue
		}
		if !checked {
			checked = true
			if err := tcpqueue.Check(); err != nil {
				return &ErrUnsupported{PID: ln.pid, FD: ln.fd, What: "TCP " + ln.local.String() + " LISTEN",
					Kind: "a TCP socket listening with connections not yet accepted, which this kernel cannot put back in a queue (" + err.Error() + "): let the program accept them first"}
			}
		}
		if err := refuseClosedQueued(ln); err != nil {
			return err
		}
		if err := h.takeFrom(c, ln); err != nil {
			return err
		}
	}
	var taken []heldConn
	for _, q := range h.queued {
		taken = append(taken, heldConn{id: q.id, pid: q.pid, local: q.child.Local, remote: q.child.Remote})
	}
	if len(taken) == 0 {
		return nil
	}
	return h.lockOutsideOf(c, taken)
}

// queueLength is the number of connections in ln's accept queue.
func queueLength(ln heldListener) (int, error) {
	dup, err := dupFD(ln.pid, ln.fd)
	if err != nil {
		return 0, err
	}
	defer unix.Close(dup)
	info, err := unix.GetsockoptTCPInfo(dup, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, fmt.Errorf("TCP %s: get TCP_INFO: %w", ln.local, err)
	}
	return int(info.Unacked), nil // a listener's unacked: its accept queue
}

// refuseClosedQueued refuses a listener whose queue holds a connection
// its peer closed already (CLOSE-WAIT, no socket file yet): no restore
// puts it back.
func refuseClosedQueued(ln heldListener) error {
	var socks []tcpqueue.Sock
	err := tcpqueue.InNetns(proc.Path(ln.pid, "ns/net"), func() (err error) {
		socks, err = tcpqueue.List(ln.family, 1<<unix.BPF_TCP_CLOSE_WAIT)
		return err
	})
	if err != nil {
		return fmt.Errorf("queue of TCP %s: %w", ln.local, err)
	}
	for _, s := range socks {
		if s.Inode == 0 && s.Local.Port() == ln.local.Port() && (ln.local.Addr().IsUnspecified() || s.Local.Addr() == ln.local.Addr()) {
			return &ErrUnsupported{PID: ln.pid, FD: ln.fd, Kind: "a TCP socket listening with a connection not yet accepted that its peer closed (" +
				s.Remote.String() + ", CLOSE-WAIT): let the program accept it first", What: "TCP " + ln.local.String() + " LISTEN"}
		}
	}
	return nil
}

// takeFrom accepts the connections queued on listener ln.
func (h *tcpHold) takeFrom(c *image.Checkpoint, ln heldListener) error {
	dup, err := dupFD(ln.pid, ln.fd)
	if err != nil {
		return err
	}
	defer unix.Close(dup)
	netns := proc.Path(ln.pid, "ns/net")
	for i := 0; i < 1<<16; i++ {
		info, err := unix.GetsockoptTCPInfo(dup, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return fmt.Errorf("TCP %s: get TCP_INFO: %w", ln.local, err)
		}
		if info.Unacked == 0 { // a listener's unacked: its accept queue
			return nil
		}
		a, _, err := unix.Accept4(dup, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err != nil {
			return fmt.Errorf("TCP %s: take a connection from its queue: %w", ln.local, err)
		}
		// Its options first: repair mode shows SO_REUSEADDR as 2 (SK_FORCE_REUSE).
		opts, err := tcpOptions(a, ln.family)
		if err == nil {
			err = tcprepair.SetRepair(a, true)
		}
		if err != nil {
			unix.Close(a) // not in repair mode: a reset; cannot be put back
			return fmt.Errorf("TCP %s: connection taken from its queue: %w", ln.local, err)
		}
		id := image.TCPQueuedID(ln.id, i)
		h.queued = append(h.queued, queuedConn{id: id, pid: ln.pid, fd: a, netns: netns})
		l, err := inspectTCP(a)
		if err != nil {
			return err
		}
		st, err := tcprepair.Dump(a)
		if err != nil {
			return fmt.Errorf("%s, not yet accepted on %s: %w", l, ln.local, err)
		}
		if len(st.SendQueue) != 0 {
			return fmt.Errorf("%s, not yet accepted on %s, has %d bytes to send", l, ln.local, len(st.SendQueue))
		}
		h.queued[len(h.queued)-1].child = tcpqueue.Child{Local: l.local, Remote: l.remote, SndNxt: st.SndSeq, RcvNxt: st.RcvSeq,
			MSS: st.MSS, Wscale: st.Wscale, SndWscale: st.SndWscale, RcvWscale: st.RcvWscale, SACK: st.SACK,
			Timestamps: st.Timestamps, Timestamp: st.Timestamp, Window: st.Window.SndWnd, Data: st.RecvQueue}
		s := &image.TCPSocket{Family: l.family, State: image.TCPEstablished, Local: l.local, Remote: l.remote, QueuedIn: ln.id, Opts: opts}
		s.Conn = &image.TCPConn{SndSeq: st.SndSeq, RcvSeq: st.RcvSeq, MSS: st.MSS, SACK: st.SACK, Timestamps: st.Timestamps,
			Wscale: st.Wscale, SndWscale: st.SndWscale, RcvWscale: st.RcvWscale, Timestamp: st.Timestamp,
			Window:    [5]uint32{st.Window.SndWl1, st.Window.SndWnd, st.Window.MaxWindow, st.Window.RcvWnd, st.Window.RcvWup},
			RecvQueue: len(st.RecvQueue)}
		c.Objects = append(c.Objects, &image.Object{ID: id, Kind: image.ObjTCPSocket, Info: s.Info(), Data: st.RecvQueue})
	}
	return fmt.Errorf("TCP %s: its queue does not empty", ln.local)
}

// putBack puts the connections taken back into their listeners' queues
// (the dump failed after takeQueued): each is closed in repair mode
// (nothing sent), then made again in the queue by internal/tcpqueue.
func (h *tcpHold) putBack() {
	for _, q := range h.queued {
		unix.Close(q.fd)
		if q.child.MSS == 0 {
			continue // its state was not read: lost
		}
		_ = tcpqueue.InNetns(q.netns, func() error {
			in, err := tcpqueue.Open()
			if err != nil {
				return err
			}
			defer in.Close()
			return in.Put(q.child)
		})
	}
	h.queued = nil
}
