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

// add records the unix socket fd f of task pid refers to (once per
// checkpoint): its type, state, name, peer, and what each kind needs —
// a listener's backlog and the connections waiting to be accepted, the
// bytes or datagrams queued for reading (peeked without consuming them),
// the owner and mode of the socket file a path-bound socket made, socket
// options. A socket
// whose other end is outside the dumped tree is refused (unless it is one
// of fds 0-2, which a restore takes over from the restorer).
func (u *unixTree) add(c *image.Checkpoint, t *image.Task, f *image.FD) error {
	pid := t.PID
	id := "unix-" + strconv.FormatUint(f.Ino, 10)
	f.Object = id
	if c.Object(id) != nil {
		return nil
	}
	s := u.socks[f.Ino]
	if s == nil {
		// sock_diag answers for the dumper's network namespace only.
		return &ErrUnsupported{PID: pid, FD: f.Num, Kind: "a unix socket sock_diag does not list (another network namespace?)", What: f.Path}
	}
	o := &image.Object{ID: id, Kind: image.ObjUnixSocket, Info: []string{
		"ino: " + strconv.FormatUint(s.Ino, 10),
		"type: " + strconv.Itoa(s.Type),
		"state: " + strconv.Itoa(s.State),
		"peer: " + strconv.FormatUint(s.Peer, 10),
		image.TextLine("name", s.Name),
	}}
	if err := u.check(pid, f); err != nil {
		return err
	}
	stream := s.Type == unix.SOCK_STREAM || s.Type == unix.SOCK_SEQPACKET
	switch {
	case s.State == proc.UnixListen:
		o.Info = append(o.Info, "backlog: "+strconv.FormatUint(uint64(s.WQueue), 10))
		var pending []string
		for _, ino := range s.Icons {
			pending = append(pending, strconv.FormatUint(ino, 10))
		}
		if len(pending) > 0 {
			o.Info = append(o.Info, "pending: "+strings.Join(pending, " "))
		}
	case stream && s.State == proc.UnixEstablished && u.waiting[s.Ino] != nil:
		if l := u.waiting[s.Ino]; u.inTree[l.Ino] {
			o.Info = append(o.Info, "listener: unix-"+strconv.FormatUint(l.Ino, 10))
		}
	case stream && s.State == proc.UnixEstablished && (s.Peer == 0 || u.socks[s.Peer] == nil):
		// The other end was closed: what it sent is still readable, then EOF.
		o.Info = append(o.Info, "peer-closed: yes")
	case s.Type == unix.SOCK_DGRAM && s.Peer != 0 && u.socks[s.Peer] == nil:
		o.Info[3] = "peer: 0" // closed since: restored unconnected
		o.Info = append(o.Info, "peer-closed: yes")
	}
	if s.Name != "" && !strings.HasPrefix(s.Name, "@") {
		info, err := socketFile(pid, t.Cwd, s)
		if err != nil {
			return &ErrUnsupported{PID: pid, FD: f.Num, Kind: err.Error(), What: describeUnix(s)}
		}
		o.Info = append(o.Info, info...)
	}
	opts, err := socketOptions(pid, f.Num)
	if err != nil {
		return err
	}
	o.Info = append(o.Info, opts...)
	if s.State != proc.UnixListen && (s.RQueue > 0 || s.Type == unix.SOCK_DGRAM) {
		if err := peekQueue(pid, f.Num, s.Type, o); err != nil {
			var ue *ErrUnsupported
			if errors.As(err, &ue) {
				ue.PID, ue.FD, ue.What = pid, f.Num, describeUnix(s)
			}
			return err
		}
	}
	c.Objects = append(c.Objects, o)
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
	case s.Peer != 0 && !u.inTree[s.Peer] && f.Num > 2:
		return refuse(fmt.Sprintf("a unix socket connected to %s outside the dumped tree (%s)", describePeer(u.socks[s.Peer]), holders(s.Peer)))
	}
	return nil
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
// resolved from the task's cwd) and returns its info lines: "dir" for a
// relative name, "file: yes" with mode, uid and gid, or "file: no" when
// the file was removed or replaced since the bind.
func socketFile(pid int, cwd string, s *proc.UnixSocket) ([]string, error) {
	path := s.Name
	var info []string
	if !filepath.IsAbs(path) {
		path = filepath.Join(cwd, s.Name)
		info = append(info, image.TextLine("dir", cwd))
	}
	var st unix.Stat_t
	err := unix.Stat(filepath.Join(proc.Path(pid, "root"), path), &st)
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Ino != s.VFSIno {
		if !filepath.IsAbs(s.Name) {
			return nil, fmt.Errorf("a unix socket bound to the relative path %s, not found from its cwd %s", s.Name, cwd)
		}
		return append(info, "file: no"), nil
	}
	return append(info, "file: yes",
		"mode: "+strconv.FormatUint(uint64(st.Mode&0o7777), 8),
		"uid: "+strconv.FormatUint(uint64(st.Uid), 10),
		"gid: "+strconv.FormatUint(uint64(st.Gid), 10)), nil
}

// sockOpts are the socket options recorded as "key: value" info lines
// (values as getsockopt returns them).
var sockOpts = []struct {
	key string
	opt int
}{{"sndbuf", unix.SO_SNDBUF}, {"rcvbuf", unix.SO_RCVBUF}, {"passcred", unix.SO_PASSCRED}, {"passsec", unix.SO_PASSSEC}}

// socketOptions reads the options of socket fd of pid that a restore sets
// again, through a pidfd_getfd duplicate.
func socketOptions(pid, fd int) ([]string, error) {
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
	var out []string
	for _, o := range sockOpts {
		v, err := unix.GetsockoptInt(dup, unix.SOL_SOCKET, o.opt)
		if err != nil {
			return nil, fmt.Errorf("getsockopt %s: %w", o.key, err)
		}
		out = append(out, o.key+": "+strconv.Itoa(v))
	}
	return out, nil
}

// peekQueue copies the receive queue of socket fd of pid into o without
// consuming it: through a duplicate taken with pidfd_getfd, with
// SO_PEEK_OFF set so that successive MSG_PEEK reads walk the queue (one
// datagram or seqpacket record per read, which keeps their boundaries);
// the socket's own peek offset is put back. Stream bytes go to o.Data;
// messages go to o.Data one after the other, with a "msg: <len> <sender>"
// info line each. Queued fds (SCM_RIGHTS) are refused.
func peekQueue(pid, fd, typ int, o *image.Object) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pidfd)
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer unix.Close(dup)
	old, err := unix.GetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return fmt.Errorf("get SO_PEEK_OFF: %w", err)
	}
	if err := unix.SetsockoptInt(dup, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return fmt.Errorf("set SO_PEEK_OFF: %w", err)
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
			return nil
		}
		if err != nil {
			return fmt.Errorf("peek queued data: %w", err)
		}
		if err := refuseRights(oob[:oobn], flags); err != nil {
			return err
		}
		if n > len(buf) {
			return &ErrUnsupported{Kind: fmt.Sprintf("a unix socket with a queued message of %d bytes (more than %d)", n, len(buf))}
		}
		if total += n; total > maxQueued {
			return &ErrUnsupported{Kind: fmt.Sprintf("a unix socket with more than %d MiB queued", maxQueued>>20)}
		}
		o.Data = append(o.Data, buf[:n]...)
		if typ == unix.SOCK_STREAM {
			if n == 0 {
				return nil // EOF
			}
			continue
		}
		sender := ""
		if sa, ok := from.(*unix.SockaddrUnix); ok {
			sender = sa.Name
		}
		o.Info = append(o.Info, image.MsgLine(n, sender))
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
