// Package tcpqueue puts TCP connections back into a listener's accept
// queue: a connection the peer had made, fully established, that the
// program had not accept()ed yet when it was checkpointed. The kernel has
// no call for that. Put makes the kernel create the child itself, with
// the recorded sequence numbers, the way custom SYN cookies do (kernel
// 6.9 or later): a TC ingress program on the loopback device gives an ACK
// segment injected from the peer's address a request socket of the
// listener with the recorded MSS, window scales, SACK and timestamps
// (the kfunc bpf_sk_assign_tcp_reqsk); the TCP stack then takes the ACK's
// seq-1 and ack_seq-1 as the peer's and its own initial sequence numbers,
// makes the child and queues it for accept. Data segments injected after
// it refill the child's receive queue. The peer is sent nothing but the
// child's ACKs, which a lock (internal/netlock) holds back while it
// holds.
package tcpqueue

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Child is a connection to put back into the queue of the listener at
// Local: from the listener's side.
type Child struct {
	Local, Remote    netip.AddrPort
	SndNxt           uint32 // the listener side's next sequence number (it sent nothing but its SYN)
	RcvNxt           uint32 // the next byte expected from the peer, after Data
	MSS              int
	Wscale           bool
	SndWscale        int // the peer's window scale
	RcvWscale        int // the listener side's
	SACK, Timestamps bool
	Timestamp        uint32 // the child's timestamp clock
	Window           uint32 // the peer's window, in bytes
	Data             []byte // received, not read
}

// segmentMax bounds the payload of one injected segment: with its
// headers it fits a 16 KiB buffer (the receive buffer counts whole
// buffers).
const segmentMax = 15000

// Injector holds the program attached to the loopback device of the
// caller's network namespace.
type Injector struct {
	pending *ebpf.Map
	prog    *ebpf.Program
	link    link.Link
	raw4    int
	raw6    int
	next    uint32
}

// Check says whether this kernel can put connections back (Open would
// load the program): a dump takes none from a queue unless it can.
func Check() error {
	in := &Injector{raw4: -1, raw6: -1}
	defer in.Close()
	return in.load()
}

// load makes the map and loads the program.
func (in *Injector) load() error {
	id, err := kfuncID()
	if err != nil {
		return err
	}
	in.pending, err = ebpf.NewMap(&ebpf.MapSpec{Name: "ckptfs_acceptq", Type: ebpf.Hash, KeySize: 4, ValueSize: valueSize, MaxEntries: 1024})
	if err != nil {
		return fmt.Errorf("BPF map: %w", err)
	}
	in.prog, err = ebpf.NewProgram(&ebpf.ProgramSpec{Name: "ckptfs_acceptq", Type: ebpf.SchedCLS, License: "GPL",
		Instructions: program(in.pending, id)})
	if err != nil {
		return fmt.Errorf("load the TC program: %w", err)
	}
	return nil
}

// Open loads and attaches the program in the caller's network namespace.
func Open() (in *Injector, err error) {
	in = &Injector{raw4: -1, raw6: -1}
	defer func() {
		if err != nil {
			in.Close()
		}
	}()
	if err := in.load(); err != nil {
		return nil, err
	}
	lo, err := loopbackIndex()
	if err != nil {
		return nil, err
	}
	in.link, err = link.AttachTCX(link.TCXOptions{Interface: lo, Program: in.prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return nil, fmt.Errorf("attach the TC program to lo ingress: %w", err)
	}
	if in.raw4, err = rawSocket(unix.AF_INET); err != nil {
		return nil, err
	}
	if in.raw6, err = rawSocket(unix.AF_INET6); err != nil {
		return nil, err
	}
	return in, nil
}

func loopbackIndex() (int, error) {
	ifs, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(ifs)
	req, err := unix.NewIfreq("lo")
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(ifs, unix.SIOCGIFINDEX, req); err != nil {
		return 0, fmt.Errorf("index of lo: %w", err)
	}
	return int(req.Uint32()), nil
}

// rawSocket is a raw socket of family sending whole IP packets.
func rawSocket(family int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return -1, fmt.Errorf("raw socket: %w", err)
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_HDRINCL, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("set IPV6_HDRINCL: %w", err)
		}
	}
	return fd, nil
}

// Close detaches the program; the children made stay.
func (in *Injector) Close() error {
	var errs []error
	if in.link != nil {
		errs = append(errs, in.link.Close())
	}
	if in.prog != nil {
		errs = append(errs, in.prog.Close())
	}
	if in.pending != nil {
		errs = append(errs, in.pending.Close())
	}
	for _, fd := range []int{in.raw4, in.raw6} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	return errors.Join(errs...)
}

// Put makes the kernel create child c in the queue of the listener at
// c.Local (in the caller's network namespace) and refills its receive
// queue; it returns once the child holds all of c.Data.
func (in *Injector) Put(c Child) error {
	if !c.Local.IsValid() || !c.Remote.IsValid() || c.Local.Addr().Is4() != c.Remote.Addr().Is4() {
		return fmt.Errorf("child %s -> %s: addresses of different families", c.Local, c.Remote)
	}
	local, remote := c.Local.Addr().Unmap(), c.Remote.Addr().Unmap()
	if local.Is4() != remote.Is4() {
		return fmt.Errorf("child %s -> %s: addresses of different families", c.Local, c.Remote)
	}
	if c.MSS < 536 || c.MSS > 0xffff || c.SndWscale < 0 || c.SndWscale > 14 || c.RcvWscale < 0 || c.RcvWscale > 14 {
		return fmt.Errorf("child %s -> %s: MSS %d, window scales %d/%d out of range", c.Local, c.Remote, c.MSS, c.SndWscale, c.RcvWscale)
	}
	in.next = in.next%0xffff + 1
	key := in.next
	val := make([]byte, valueSize)
	l, r := netip.AddrPortFrom(local, c.Local.Port()), netip.AddrPortFrom(remote, c.Remote.Port())
	// struct bpf_sock_tuple as the packet sees it: from the peer to the listener.
	if local.Is4() {
		s, d := r.Addr().As4(), l.Addr().As4()
		copy(val[0:], s[:])
		copy(val[4:], d[:])
		putPort(val[8:], r.Port())
		putPort(val[10:], l.Port())
		ne.PutUint32(val[valTupleSize:], 12)
	} else {
		s, d := r.Addr().As16(), l.Addr().As16()
		copy(val[0:], s[:])
		copy(val[16:], d[:])
		putPort(val[32:], r.Port())
		putPort(val[34:], l.Port())
		ne.PutUint32(val[valTupleSize:], 36)
	}
	a := val[valAttrs:]
	ne.PutUint32(a[0:], 0)           // rcv_tsval: the peer's, 0 = none to check
	ne.PutUint32(a[4:], c.Timestamp) // rcv_tsecr: sets the child's clock
	ne.PutUint16(a[8:], uint16(c.MSS))
	a[10], a[11] = byte(c.RcvWscale), byte(c.SndWscale)
	a[13], a[14], a[15] = b2u(c.Wscale), b2u(c.SACK), b2u(c.Timestamps)
	if !c.Wscale {
		a[10], a[11] = 0, 0
	}
	ne.PutUint32(val[valResult:], notRun)
	if err := in.pending.Put(key, val); err != nil {
		return fmt.Errorf("BPF map: %w", err)
	}
	defer in.pending.Delete(key)

	fd := in.raw4
	if local.Is6() {
		fd = in.raw6
	}
	seq := c.RcvNxt - uint32(len(c.Data))
	window := c.Window
	if c.Wscale {
		window >>= c.SndWscale
	}
	if window > 0xffff {
		window = 0xffff
	}
	seg := segment{src: r, dst: l, seq: seq, ack: c.SndNxt, window: uint16(window), timestamps: c.Timestamps}
	data := c.Data
	first := true
	for first || len(data) > 0 {
		n := min(len(data), segmentMax)
		seg.payload = data[:n]
		if err := send(fd, key|Mark, seg.packet(), l); err != nil {
			return fmt.Errorf("child %s -> %s: %w", c.Local, c.Remote, err)
		}
		if first {
			first = false
			res, err := in.result(key)
			if err != nil {
				return err
			}
			if res != 0 {
				return fmt.Errorf("child %s -> %s: %s", c.Local, c.Remote, resultError(res))
			}
		}
		data = data[n:]
		seg.seq += uint32(n)
	}
	return c.wait()
}

// wait waits for the child to be there, established, holding all of c.Data.
func (c Child) wait() error {
	family := unix.AF_INET6
	if c.Local.Addr().Is4() {
		family = unix.AF_INET
	}
	got := -1
	for range 2000 {
		socks, err := List(family, 1<<unix.BPF_TCP_ESTABLISHED)
		if err != nil {
			return err
		}
		for _, s := range socks {
			if s.Local == c.Local && s.Remote == c.Remote && s.Inode == 0 {
				got = s.RecvQueue
			}
		}
		if got == len(c.Data) {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	if got < 0 {
		return fmt.Errorf("child %s -> %s: not in the listener's queue after its ACK", c.Local, c.Remote)
	}
	return fmt.Errorf("child %s -> %s: holds %d of its %d bytes (its receive buffer is too small)", c.Local, c.Remote, got, len(c.Data))
}

// result waits for the program to have seen the first segment of entry key.
func (in *Injector) result(key uint32) (int32, error) {
	val := make([]byte, valueSize)
	for range 2000 {
		if err := in.pending.Lookup(key, &val); err != nil {
			return 0, fmt.Errorf("BPF map: %w", err)
		}
		if r := int32(ne.Uint32(val[valResult:])); r != notRun {
			return r, nil
		}
		time.Sleep(time.Millisecond)
	}
	return 0, errors.New("the injected ACK never reached the TC program on lo")
}

func resultError(r int32) string {
	if r == noListener {
		return "no listener found for it"
	}
	return fmt.Sprintf("bpf_sk_assign_tcp_reqsk: %v", unix.Errno(-r))
}

func send(fd int, mark uint32, pkt []byte, to netip.AddrPort) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
		return fmt.Errorf("set SO_MARK: %w", err)
	}
	var sa unix.Sockaddr
	if to.Addr().Is4() {
		sa = &unix.SockaddrInet4{Addr: to.Addr().As4()}
	} else {
		sa = &unix.SockaddrInet6{Addr: to.Addr().As16()}
	}
	if err := unix.Sendto(fd, pkt, 0, sa); err != nil {
		return fmt.Errorf("inject a segment of %d bytes: %w", len(pkt), err)
	}
	return nil
}

func putPort(b []byte, p uint16) { b[0], b[1] = byte(p>>8), byte(p) }

func b2u(b bool) byte {
	if b {
		return 1
	}
	return 0
}
