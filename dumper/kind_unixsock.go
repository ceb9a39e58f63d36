package dumper

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// unixTree is what sock_diag says about the unix sockets of the network
// namespace, seen from the dumped tree: which socket inodes the tree's fds
// hold, and which listener each connection not yet accepted waits on.
type unixTree struct {
	socks   map[uint64]*proc.UnixSocket
	inTree  map[uint64]bool
	waiting map[uint64]*proc.UnixSocket // client inode -> listener it waits on
}

func newUnixTree(c *image.Checkpoint) (*unixTree, error) {
	socks, err := proc.UnixSockets()
	if err != nil {
		return nil, err
	}
	u := &unixTree{socks: socks, inTree: map[uint64]bool{}, waiting: map[uint64]*proc.UnixSocket{}}
	for _, t := range c.Tasks {
		for _, f := range t.FDs {
			if f.Kind == image.FDSocket {
				u.inTree[f.Ino] = true
			}
		}
	}
	for _, s := range socks {
		for _, ino := range s.Icons {
			u.waiting[ino] = s
		}
	}
	return u, nil
}

// maxQueued bounds the bytes peeked from one socket's receive queue.
const maxQueued = 64 << 20

// unixKind is a unix socket: an object with what sock_diag says of it,
// its options and its queued data. Any other socket is refused.
type unixKind struct{ noOps }

func (unixKind) fdKind() string                        { return image.FDSocket }
func (unixKind) classifies(_ string, mode uint32) bool { return isType(mode, unix.S_IFSOCK) }
func (unixKind) owns(*image.FD) bool                   { return true }

// refuse refuses sockets other than unix ones (the checks of a unix
// socket's peers need every socket of the tree: precheckUnix).
func (unixKind) refuse(pid int, f *image.FD) error {
	isUnix, err := unixSocket(pid, f.Num)
	if err != nil {
		return err
	}
	if !isUnix {
		ino, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(f.Path, "socket:["), "]"), 10, 64)
		return &ErrUnsupported{PID: pid, FD: f.Num, Kind: socketKind(pid, ino), What: f.Path}
	}
	return nil
}

// collect records the unix socket fd f of task t refers to (once per
// checkpoint): sock_diag's view of all the namespace's unix sockets is
// read once per dump, on the first socket.
func (unixKind) collect(cc *collection, t *image.Task, f *image.FD) error {
	if cc.socks == nil {
		var err error
		if cc.socks, err = newUnixTree(cc.c); err != nil {
			return err
		}
	}
	return cc.socks.add(cc.c, t, f)
}

// add records the unix socket fd f of task pid refers to (once per
// checkpoint): its type, state, name, peer, and what each kind needs —
// a listener's backlog and the connections waiting to be accepted, the
// bytes or datagrams queued for reading (peeked without consuming them),
// the owner and mode of the socket file a path-bound socket made, socket
// options. A socket whose other end is outside the dumped tree is refused
// (unless it is one of fds 0-2, which a restore takes over from the
// restorer).
func (u *unixTree) add(c *image.Checkpoint, t *image.Task, f *image.FD) error {
	pid := t.PID
	id := image.UnixSocketID(f.Ino)
	f.Object = id
	if c.Object(id) != nil {
		return nil
	}
	s := u.socks[f.Ino]
	if s == nil {
		// sock_diag answers for the dumper's network namespace only.
		return &ErrUnsupported{PID: pid, FD: f.Num, Kind: "a unix socket sock_diag does not list (another network namespace?)", What: f.Path}
	}
	us := &image.UnixSocket{Ino: s.Ino, Type: s.Type, State: s.State, Peer: s.Peer, Name: s.Name}
	if err := u.check(pid, f); err != nil {
		return err
	}
	stream := s.Type == unix.SOCK_STREAM || s.Type == unix.SOCK_SEQPACKET
	switch {
	case s.State == proc.UnixListen:
		us.Backlog = int(s.WQueue)
		us.Pending = s.Icons
	case stream && s.State == proc.UnixEstablished && u.waiting[s.Ino] != nil:
		if l := u.waiting[s.Ino]; u.inTree[l.Ino] {
			us.Listener = image.UnixSocketID(l.Ino)
		}
	case stream && s.State == proc.UnixEstablished && (s.Peer == 0 || u.socks[s.Peer] == nil):
		// The other end was closed: what it sent is still readable, then EOF.
		us.PeerClosed = true
	case s.Type == unix.SOCK_DGRAM && s.Peer != 0 && u.socks[s.Peer] == nil:
		us.Peer = 0 // closed since: restored unconnected
		us.PeerClosed = true
	case peerOutside(u, s, f):
		// Connected to a process outside the tree: restored with no
		// peer, as if that process had exited (what it sent is still
		// readable, then EOF; a datagram socket comes back unconnected).
		us.PeerClosed = true
		if s.Type == unix.SOCK_DGRAM {
			us.Peer = 0
		}
	}
	if s.Name != "" && !strings.HasPrefix(s.Name, "@") {
		dir, file, err := socketFile(pid, t.Cwd, s)
		if err != nil {
			return &ErrUnsupported{PID: pid, FD: f.Num, Kind: err.Error(), What: describeUnix(s)}
		}
		us.Dir, us.File = dir, file
	}
	opts, err := socketOptions(pid, f.Num)
	if err != nil {
		return err
	}
	us.Opts = opts
	var data []byte
	if s.State != proc.UnixListen && (s.RQueue > 0 || s.Type == unix.SOCK_DGRAM) {
		if data, us.Msgs, err = peekQueue(pid, f.Num, s.Type); err != nil {
			var ue *ErrUnsupported
			if errors.As(err, &ue) {
				ue.PID, ue.FD, ue.What = pid, f.Num, describeUnix(s)
			}
			return err
		}
	}
	c.Objects = append(c.Objects, &image.Object{ID: id, Kind: image.ObjUnixSocket, Info: us.Info(), Data: data})
	return nil
}

// check refuses the unix socket of fd f of task pid if a dump could not
// restore it: its other end is outside the dumped tree (except on fds 0-2,
// which a restore takes over), or a listener has a connection waiting from
// outside the tree or one with data sent on it (it cannot be read without
// accepting).
func (u *unixTree) check(pid int, f *image.FD) error {
	s := u.socks[f.Ino]
	if s == nil {
		return nil
	}
	refuse := func(kind string) error {
		return &ErrUnsupported{PID: pid, FD: f.Num, Kind: kind, What: describeUnix(s)}
	}
	stream := s.Type == unix.SOCK_STREAM || s.Type == unix.SOCK_SEQPACKET
	switch {
	case s.State == proc.UnixListen:
		for _, ino := range s.Icons {
			cl := u.socks[ino]
			switch {
			case ino == 0:
				return refuse("a listening unix socket with a connection waiting to be accepted whose client already closed (what it sent cannot be read without accepting)")
			case !u.inTree[ino]:
				return refuse(fmt.Sprintf("a listening unix socket with a connection waiting to be accepted from outside the dumped tree (%s)", holders(ino)))
			case cl != nil && cl.WQueue > 0:
				return refuse(fmt.Sprintf("a listening unix socket with data sent on a connection not yet accepted (by unix socket %d, %s): it cannot be read without accepting", ino, holders(ino)))
			}
		}
	case stream && s.State == proc.UnixEstablished && u.waiting[s.Ino] != nil:
		if l := u.waiting[s.Ino]; !u.inTree[l.Ino] && f.Num > 2 {
			return refuse(fmt.Sprintf("a unix socket connected to %s outside the dumped tree, not yet accepted (listener %s)", nameOr(l.Name, "an unnamed listener"), holders(l.Ino)))
		}
	case stream && s.State == proc.UnixEstablished && (s.Peer == 0 || u.socks[s.Peer] == nil):
	case s.Type == unix.SOCK_DGRAM && s.Peer != 0 && u.socks[s.Peer] == nil:
		// Connected to a datagram socket since closed: restored unconnected.
	case peerOutside(u, s, f):
		// Restored with no peer (add).
	case s.Peer != 0 && !u.inTree[s.Peer] && f.Num > 2:
		return refuse(fmt.Sprintf("a unix socket connected to %s outside the dumped tree (%s): hand one in with restore --inherit-fd", describePeer(u.socks[s.Peer]), holders(s.Peer)))
	}
	return nil
}

// peerOutside says whether connected socket s of fd f has its peer outside
// the dumped tree and is restored with no peer: a connected stream,
// seqpacket or datagram socket on an fd above 2 (fds 0-2 are taken over
// from the restorer instead).
func peerOutside(u *unixTree, s *proc.UnixSocket, f *image.FD) bool {
	return f.Num > 2 && s.State == proc.UnixEstablished && s.Peer != 0 && !u.inTree[s.Peer] && u.waiting[s.Ino] == nil
}

// precheckUnix refuses, before the tree is seized, unix sockets check
// refuses (fds maps pid to its fds).
func precheckUnix(fds map[int][]*image.FD) error {
	c := &image.Checkpoint{}
	sockets := false
	pids := make([]int, 0, len(fds))
	for pid := range fds {
		pids = append(pids, pid)
	}
	sort.Ints(pids) // the same message every time, parents first as a rule
	for _, pid := range pids {
		l := fds[pid]
		c.Tasks = append(c.Tasks, &image.Task{PID: pid, FDs: l})
		for _, f := range l {
			sockets = sockets || f.Kind == image.FDSocket
		}
	}
	if !sockets {
		return nil
	}
	u, err := newUnixTree(c)
	if err != nil {
		return err
	}
	for _, t := range c.Tasks {
		for _, f := range t.FDs {
			if f.Kind == image.FDSocket {
				if err := u.check(t.PID, f); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func nameOr(name, none string) string {
	if name == "" {
		return none
	}
	return name
}

func describeUnix(s *proc.UnixSocket) string {
	typ := map[int]string{unix.SOCK_STREAM: "stream", unix.SOCK_DGRAM: "dgram", unix.SOCK_SEQPACKET: "seqpacket"}[s.Type]
	return fmt.Sprintf("unix %s socket %d %s", typ, s.Ino, nameOr(s.Name, "unnamed"))
}

func describePeer(p *proc.UnixSocket) string {
	if p == nil {
		return "a socket"
	}
	return nameOr(p.Name, "an unnamed socket") + fmt.Sprintf(" (socket %d)", p.Ino)
}

// holders names the processes whose fds hold socket ino, for messages.
func holders(ino uint64) string {
	want := "socket:[" + strconv.FormatUint(ino, 10) + "]"
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(proc.Path(pid, "fd"))
		for _, fd := range fds {
			if l, _ := os.Readlink(filepath.Join(proc.Path(pid, "fd"), fd.Name())); l == want {
				comm, _ := proc.Read(pid, "comm")
				out = append(out, fmt.Sprintf("pid %d %s fd %s", pid, strings.TrimSpace(string(comm)), fd.Name()))
				break
			}
		}
	}
	if len(out) == 0 {
		return "held by no process visible here"
	}
	return "held by " + strings.Join(out, ", ")
}

// socketFile finds the file a path-bound socket made (a relative name is
// resolved from the task's cwd) and returns the directory of a relative
// name and the file: its mode, uid and gid, or that it was removed or
// replaced since the bind.
func socketFile(pid int, cwd string, s *proc.UnixSocket) (string, *image.UnixSocketFile, error) {
	path, dir := s.Name, ""
	if !filepath.IsAbs(path) {
		path = filepath.Join(cwd, s.Name)
		dir = cwd
	}
	var st unix.Stat_t
	err := unix.Stat(filepath.Join(proc.Path(pid, "root"), path), &st)
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Ino != s.VFSIno {
		if !filepath.IsAbs(s.Name) {
			return "", nil, fmt.Errorf("a unix socket bound to the relative path %s, not found from its cwd %s", s.Name, cwd)
		}
		return dir, &image.UnixSocketFile{}, nil
	}
	return dir, &image.UnixSocketFile{Exists: true, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid}, nil
}

// socketOptions reads the options of socket fd of pid that a restore sets
// again, through a pidfd_getfd duplicate.
func socketOptions(pid, fd int) (*image.UnixSocketOpts, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer unix.Close(dup)
	o := &image.UnixSocketOpts{}
	for _, x := range []struct {
		key string
		opt int
		to  *int
	}{{"sndbuf", unix.SO_SNDBUF, &o.Sndbuf}, {"rcvbuf", unix.SO_RCVBUF, &o.Rcvbuf},
		{"passcred", unix.SO_PASSCRED, &o.Passcred}, {"passsec", unix.SO_PASSSEC, &o.Passsec}} {
		v, err := unix.GetsockoptInt(dup, unix.SOL_SOCKET, x.opt)
		if err != nil {
			return nil, fmt.Errorf("getsockopt %s: %w", x.key, err)
		}
		*x.to = v
	}
	return o, nil
}

// peekQueue returns the receive queue of socket fd of pid without
// consuming it: through a duplicate taken with pidfd_getfd, with
// SO_PEEK_OFF set so that successive MSG_PEEK reads walk the queue (one
// datagram or seqpacket record per read, which keeps their boundaries);
// the socket's own peek offset is put back. It returns the bytes (a
// datagram or seqpacket socket's messages one after the other) and, for
// messages, each one's length and sender. Queued fds (SCM_RIGHTS) are
// refused.
func peekQueue(pid, fd, typ int) (data []byte, msgs []image.UnixMsg, err error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer unix.Close(dup)
	old, err := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return nil, nil, fmt.Errorf("get SO_PEEK_OFF: %w", err)
	}
	if err := unix.SetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, nil, fmt.Errorf("set SO_PEEK_OFF: %w", err)
	}
	defer unix.SetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_PEEK_OFF, old)
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(64*4))
	peek := unix.MSG_PEEK | unix.MSG_DONTWAIT
	if typ != unix.SOCK_STREAM {
		peek |= unix.MSG_TRUNC // the message's real length
	}
	for total := 0; ; {
		n, oobn, flags, from, err := unix.Recvmsg(dup, buf, oob, peek)
		if err == unix.EAGAIN {
			return data, msgs, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("peek queued data: %w", err)
		}
		if err := refuseRights(oob[:oobn], flags); err != nil {
			return nil, nil, err
		}
		if n > len(buf) {
			return nil, nil, &ErrUnsupported{Kind: fmt.Sprintf("a unix socket with a queued message of %d bytes (more than %d)", n, len(buf))}
		}
		if total += n; total > maxQueued {
			return nil, nil, &ErrUnsupported{Kind: fmt.Sprintf("a unix socket with more than %d MiB queued", maxQueued>>20)}
		}
		data = append(data, buf[:n]...)
		if typ == unix.SOCK_STREAM {
			if n == 0 {
				return data, nil, nil // EOF
			}
			continue
		}
		sender := ""
		if sa, ok := from.(*unix.SockaddrUnix); ok {
			sender = sa.Name
		}
		msgs = append(msgs, image.UnixMsg{Len: n, Sender: sender})
	}
}

// refuseRights refuses a queued message carrying fds: peeking installed
// them in the dumper (closed here at once), a restore could not.
func refuseRights(oob []byte, flags int) error {
	msgs, _ := unix.ParseSocketControlMessage(oob)
	found := flags&unix.MSG_CTRUNC != 0
	for _, m := range msgs {
		if fds, err := unix.ParseUnixRights(&m); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			found = true
		}
	}
	if found {
		return &ErrUnsupported{Kind: "a unix socket with fds in flight (SCM_RIGHTS)"}
	}
	return nil
}

// unixSocket says whether fd n of pid is a unix socket, by the protocol
// name sockfs gives as the xattr system.sockprotoname ("UNIX",
// "UNIX-STREAM"; "TCP", "UDP", "NETLINK"... for others): one syscall per
// socket, where reading /proc/<pid>/net/unix (every unix socket of the
// namespace) for each process of a 500-process tree took a second.
func unixSocket(pid, n int) (bool, error) {
	buf := make([]byte, 64)
	k, err := unix.Getxattr(proc.FDPath(pid, n), "system.sockprotoname", buf)
	if err != nil {
		return false, fmt.Errorf("protocol of socket fd %d of %d: %w", n, pid, err)
	}
	return strings.HasPrefix(unix.ByteSliceToString(buf[:k]), "UNIX"), nil
}

// socketKind names the protocol of a non-unix socket for the error message.
func socketKind(pid int, ino uint64) string {
	needle := " " + strconv.FormatUint(ino, 10) + " "
	for _, p := range []struct{ file, kind string }{
		{"net/tcp", "a TCP socket"}, {"net/tcp6", "a TCP socket"},
		{"net/udp", "a UDP socket"}, {"net/udp6", "a UDP socket"},
		{"net/raw", "a raw socket"}, {"net/raw6", "a raw socket"},
		{"net/netlink", "a netlink socket"}, {"net/packet", "a packet socket"},
	} {
		if b, err := proc.Read(pid, p.file); err == nil && strings.Contains(string(b), needle) {
			return p.kind
		}
	}
	return "a socket"
}
