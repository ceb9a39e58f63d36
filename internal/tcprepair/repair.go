package tcprepair

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The queues TCP_REPAIR_QUEUE selects (linux/tcp.h).
const (
	noQueue   = 0
	recvQueue = 1
	sendQueue = 2
)

// tcp_info option bits (linux/tcp.h TCPI_OPT_*).
const (
	optTimestamps = 1
	optSACK       = 2
	optWscale     = 4
)

// MaxQueue bounds the bytes read from one queue.
const MaxQueue = 64 << 20

// State is what a restore needs of an established connection.
type State struct {
	SndSeq, RcvSeq       uint32 // write_seq (after the whole send queue), rcv_nxt
	MSS                  int
	SACK, Timestamps     bool
	Wscale               bool
	SndWscale, RcvWscale int
	Timestamp            uint32 // the connection's TCP timestamp clock
	Window               Window
	SendQueue            []byte // sent but not acknowledged, then not yet sent
	Unsent               int    // bytes at the end of SendQueue never sent
	RecvQueue            []byte // received, not yet read
}

// SetRepair turns repair mode on or off on fd (off sends a window probe).
func SetRepair(fd int, on bool) error {
	v := unix.TCP_REPAIR_OFF
	if on {
		v = unix.TCP_REPAIR_ON
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, v); err != nil {
		return fmt.Errorf("set TCP_REPAIR %d: %w", v, err)
	}
	return nil
}

// Established says whether fd is an established connection.
func Established(fd int) (bool, error) {
	h, err := getInfoHead(fd)
	return err == nil && h.State == unix.BPF_TCP_ESTABLISHED, err
}

// Dump reads the state of fd, an established connection in repair mode,
// without changing it: its queues are peeked.
func Dump(fd int) (*State, error) {
	h, err := getInfoHead(fd)
	if err != nil {
		return nil, err
	}
	if h.State != unix.BPF_TCP_ESTABLISHED {
		return nil, fmt.Errorf("connection in TCP state %d, not established", h.State)
	}
	st := &State{SACK: h.Options&optSACK != 0, Timestamps: h.Options&optTimestamps != 0, Wscale: h.Options&optWscale != 0,
		SndWscale: int(h.SndWscale), RcvWscale: int(h.RcvWscale)}
	inq, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if err != nil {
		return nil, fmt.Errorf("SIOCINQ: %w", err)
	}
	outq, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return nil, fmt.Errorf("SIOCOUTQ: %w", err)
	}
	if st.Unsent, err = unix.IoctlGetInt(fd, unix.SIOCOUTQNSD); err != nil {
		return nil, fmt.Errorf("SIOCOUTQNSD: %w", err)
	}
	if inq > MaxQueue || outq > MaxQueue {
		return nil, fmt.Errorf("queues of %d and %d bytes (more than %d MiB)", inq, outq, MaxQueue>>20)
	}
	if st.MSS, err = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG); err != nil {
		return nil, fmt.Errorf("get TCP_MAXSEG: %w", err)
	}
	if st.Timestamps {
		ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return nil, fmt.Errorf("get TCP_TIMESTAMP: %w", err)
		}
		st.Timestamp = uint32(ts)
	}
	if st.Window, err = getWindow(fd); err != nil {
		return nil, err
	}
	defer unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, noQueue)
	if st.RcvSeq, st.RecvQueue, err = peekQueue(fd, recvQueue, inq); err != nil {
		return nil, err
	}
	if st.SndSeq, st.SendQueue, err = peekQueue(fd, sendQueue, outq); err != nil {
		return nil, err
	}
	if st.Unsent > len(st.SendQueue) {
		return nil, fmt.Errorf("%d unsent bytes in a send queue of %d", st.Unsent, len(st.SendQueue))
	}
	return st, nil
}

// peekQueue selects queue q and reads its sequence number and its n
// bytes, leaving them queued.
func peekQueue(fd, q, n int) (uint32, []byte, error) {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
		return 0, nil, fmt.Errorf("set TCP_REPAIR_QUEUE %d: %w", q, err)
	}
	seq, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
	if err != nil {
		return 0, nil, fmt.Errorf("get TCP_QUEUE_SEQ of queue %d: %w", q, err)
	}
	if n == 0 {
		return uint32(seq), nil, nil
	}
	buf := make([]byte, n)
	got, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return 0, nil, fmt.Errorf("peek queue %d: %w", q, err)
	}
	if got != n {
		return 0, nil, fmt.Errorf("peek queue %d: %d bytes of %d", q, got, n)
	}
	return uint32(seq), buf, nil
}

// Restore makes fd, a new TCP socket, the connection st from local to
// remote, in repair mode: nothing is sent until Resume. The caller sets
// the socket options it wants afterwards (Restore forces the buffer sizes
// large enough for the queues).
func Restore(fd int, st *State, local, remote unix.Sockaddr) error {
	if err := SetRepair(fd, true); err != nil {
		return err
	}
	sent := len(st.SendQueue) - st.Unsent
	for _, q := range []struct {
		q   int
		seq uint32
	}{{sendQueue, st.SndSeq - uint32(st.Unsent) - uint32(sent)}, {recvQueue, st.RcvSeq - uint32(len(st.RecvQueue))}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q.q); err != nil {
			return fmt.Errorf("set TCP_REPAIR_QUEUE %d: %w", q.q, err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ, int(int32(q.seq))); err != nil {
			return fmt.Errorf("set TCP_QUEUE_SEQ of queue %d: %w", q.q, err)
		}
	}
	// Repair mode lets the bind share the port of a listener or of
	// another connection (SK_FORCE_REUSE); setting SO_REUSEADDR now would
	// undo that.
	if err := unix.Bind(fd, local); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if err := unix.Connect(fd, remote); err != nil {
		return fmt.Errorf("connect in repair mode: %w", err)
	}
	opts := []unix.TCPRepairOpt{{Code: unix.TCPOPT_MAXSEG, Val: uint32(st.MSS)}}
	if st.Wscale {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_WINDOW, Val: uint32(st.SndWscale) | uint32(st.RcvWscale)<<16})
	}
	if st.Timestamps {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_TIMESTAMP})
	}
	if st.SACK {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_SACK_PERMITTED})
	}
	if err := setRepairOptions(fd, opts); err != nil {
		return err
	}
	if st.Timestamps {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP, int(int32(st.Timestamp))); err != nil {
			return fmt.Errorf("set TCP_TIMESTAMP: %w", err)
		}
	}
	if err := growBuffers(fd, len(st.SendQueue), len(st.RecvQueue)); err != nil {
		return err
	}
	if err := fillQueue(fd, recvQueue, st.RecvQueue); err != nil {
		return err
	}
	if err := fillQueue(fd, sendQueue, st.SendQueue[:sent]); err != nil {
		return err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, noQueue); err != nil {
		return fmt.Errorf("set TCP_REPAIR_QUEUE off: %w", err)
	}
	return setWindow(fd, st.Window)
}

// Resume takes fd, restored by Restore, out of repair mode and sends the
// bytes that were never sent.
func Resume(fd int, st *State) error {
	if err := SetRepair(fd, false); err != nil {
		return err
	}
	return writeAll(fd, st.SendQueue[len(st.SendQueue)-st.Unsent:], 0)
}

func fillQueue(fd, q int, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
		return fmt.Errorf("set TCP_REPAIR_QUEUE %d: %w", q, err)
	}
	return writeAll(fd, data, q)
}

func writeAll(fd int, data []byte, q int) error {
	for len(data) > 0 {
		n, err := unix.SendmsgN(fd, data, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if err != nil {
			return fmt.Errorf("fill queue %d with %d bytes: %w", q, len(data), err)
		}
		data = data[n:]
	}
	return nil
}

// growBuffers makes fd's buffers hold the queues (with their overhead).
func growBuffers(fd, snd, rcv int) error {
	for _, b := range []struct {
		get, force, n int
	}{{unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, snd}, {unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, rcv}} {
		want := 2*b.n + (256 << 10)
		if cur, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, b.get); err == nil && cur >= want {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.force, want); err != nil {
			return fmt.Errorf("grow socket buffer to %d: %w", want, err)
		}
	}
	return nil
}
