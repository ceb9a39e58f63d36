package restorer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// Unix sockets are all recreated at once, the first time a restored fd
// needs one, in the restorer, and then installed in the tasks like any
// other restorer file:
//
//  1. listeners are bound to their name and listen again with their
//     backlog; unconnected sockets with a name (datagram servers) are bound;
//  2. connected stream and seqpacket pairs without a name become socket
//     pairs; a pair with a name is made by connecting its client end to the
//     restored listener of that name (or to a temporary one bound to it)
//     and accepting, so that getsockname/getpeername read as before;
//  3. connections that were waiting to be accepted are connected to their
//     restored listener again, in the order accept returned them;
//  4. queued bytes, records and datagrams are sent into each socket again;
//  5. datagram sockets connect to their peers.
//
// A path a socket binds to may still hold the socket file of the killed
// process: it is removed if no socket listens on it (connect says
// ECONNREFUSED), else the restore fails before any process is created.
//
// Every bind, connect, send to a name and unlink of a socket file is done
// with the credentials of the task holding the socket (its owner: the first
// task with an fd on it, else on its peer or listener), so a socket file is
// created only where that uid may create one, owned by it, and a name
// reaches only a socket its uid may connect to.

// unixKind is a unix socket (object unix-<ino>): every unix socket of the
// checkpoint is made at once on the first open (buildUnix), then each is
// installed like any restorer file, its status flags set on the socket
// itself (a socket has one file).
type unixKind struct{ kindBase }

func (unixKind) open(fs *files, c *image.Checkpoint, _ *image.Task, f *image.FD) (int, error) {
	fd, err := fs.socket(c, c.Object(f.Object))
	if err != nil {
		return -1, err
	}
	if err := setStatusFlags(fd, f.Flags); err != nil {
		return -1, err
	}
	return fd, nil
}

// usock is one unix socket object and its part in the rebuild.
type usock struct {
	o          *image.Object
	s          *image.UnixSocket // o's info
	typ, state int
	name       string // bound name, "@..." for abstract; "" if none
	dir        string // for a relative name, the directory it was bound from
	peer       string // object id of the peer, if in the checkpoint
	listener   string // object id of the listener this connection waits on
	peerClosed bool
	bind       bool // the rebuild binds name (else the name comes from accept or is lost)
	accepted   bool // the server end of a named pair
	msgs       []umsg
	owner      *image.Task // binds, connects, sends as this task (taskcreds.go)
	fd         int         // the restorer's socket, -1 until made
	partner    int         // where to write this socket's queued bytes (stream, seqpacket pairs)
}

type umsg struct {
	data   []byte
	sender string
}

// addr is the address connecting to u reaches it by.
func (u *usock) addr() *unix.SockaddrUnix {
	if u.dir != "" {
		return &unix.SockaddrUnix{Name: filepath.Join(u.dir, u.name)}
	}
	return &unix.SockaddrUnix{Name: u.name}
}

// path is the file system path u binds to, "" for abstract or no name.
func (u *usock) path() string {
	if u.name == "" || strings.HasPrefix(u.name, "@") {
		return ""
	}
	return u.addr().Name
}

// unixPlan reads the unix socket objects of c and decides who binds, who
// connects and who accepts.
func unixPlan(c *image.Checkpoint) (map[string]*usock, []*usock, error) {
	byID := map[string]*usock{}
	var list []*usock
	for _, o := range c.Objects {
		if o.Kind != image.ObjUnixSocket {
			continue
		}
		us, err := image.ParseUnixSocket(o, false)
		if err != nil {
			return nil, nil, err
		}
		u := &usock{o: o, s: us, fd: -1, partner: -1, listener: us.Listener, peerClosed: us.PeerClosed,
			typ: us.Type, state: us.State, dir: us.Dir, name: us.Name}
		if p := us.Peer; p != 0 && c.Object(image.UnixSocketID(p)) != nil {
			u.peer = image.UnixSocketID(p)
		}
		off := 0
		for _, m := range us.Msgs {
			u.msgs = append(u.msgs, umsg{o.Data[off : off+m.Len], m.Sender})
			off += m.Len
		}
		byID[o.ID] = u
		list = append(list, u)
	}
	for _, u := range list {
		u.owner = objectHolder(c, u.o.ID)
		if u.owner == nil && u.peer != "" {
			u.owner = objectHolder(c, u.peer)
		}
		if u.owner == nil && u.listener != "" {
			u.owner = objectHolder(c, u.listener)
		}
		if u.owner == nil {
			return nil, nil, fmt.Errorf("unix socket %s: no task holds it, its peer or its listener", u.o.ID)
		}
	}
	listeners := listenersByName(list)
	listenerNamed := func(name string, typ int) *usock { return listeners[listenerKey{name, typ}] }
	for _, u := range list {
		switch {
		case u.state == unixListen || u.typ == unix.SOCK_DGRAM || u.listener != "" || u.state != unixEstablished:
			u.bind = u.name != ""
		case u.peer != "" && !u.accepted && !byID[u.peer].accepted:
			// A connected pair: the accepted end has its listener's name.
			p := byID[u.peer]
			if u.name == "" && p.name == "" {
				break
			}
			server, client := u, p
			if u.name == "" || (listenerNamed(u.name, u.typ) == nil && listenerNamed(p.name, p.typ) != nil) {
				server, client = p, u
			}
			server.accepted = true
			client.bind = client.name != ""
		}
	}
	return byID, list, nil
}

type listenerKey struct {
	name string
	typ  int
}

func listenersByName(list []*usock) map[listenerKey]*usock {
	m := map[listenerKey]*usock{}
	for _, u := range list {
		if u.state == unixListen && u.name != "" {
			m[listenerKey{u.name, u.typ}] = u
		}
	}
	return m
}

const (
	unixEstablished = image.UnixConnected
	unixListen      = image.UnixListen
)

// unixPeerOutside reports a unix socket whose other end is not in the
// checkpoint (restore takes such a socket over on fds 0-2 only).
func unixPeerOutside(c *image.Checkpoint, o *image.Object) bool {
	u, err := image.ParseUnixSocket(o, false)
	return err == nil && u.Peer != 0 && !u.PeerClosed && len(objectUsers(c, image.UnixSocketID(u.Peer))) == 0
}

// checkUnixPaths checks, before any process is created, that every path a
// unix socket binds to is free, or holds a stale socket file.
func checkUnixPaths(c *image.Checkpoint) error {
	_, list, err := unixPlan(c)
	if err != nil {
		return err
	}
	for _, u := range list {
		if u.bind && u.path() != "" {
			if err := freePath(u.path(), false); err != nil {
				return fmt.Errorf("unix socket %s: %w", u.o.ID, err)
			}
		}
	}
	return nil
}

// freePath checks that nothing listens on path: absent, or a socket file
// nobody is bound to (connect gives ECONNREFUSED), which it removes if
// remove is set.
func freePath(path string, remove bool) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(filepath.Dir(path)); err != nil {
			return fmt.Errorf("unix socket path %s: directory: %w", path, pathErr(err))
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("unix socket path %s: %w", path, pathErr(err))
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("unix socket path %s exists and is not a socket", path)
	}
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM, unix.SOCK_SEQPACKET} {
		fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return err
		}
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		unix.Close(fd)
		switch {
		case err == nil || err == unix.EAGAIN:
			return fmt.Errorf("unix socket path %s is in use: a socket is bound to it and accepts connections (stop it, or remove the file)", path)
		case err == unix.EPROTOTYPE:
			continue // a live socket of another type: try that type
		case err == unix.ECONNREFUSED:
			if !remove {
				return nil
			}
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("remove stale unix socket file %s: %w", path, pathErr(err))
			}
			return nil
		default:
			return fmt.Errorf("unix socket path %s: connect: %w", path, err)
		}
	}
	return fmt.Errorf("unix socket path %s is in use", path)
}

// socket returns the restorer's fd for unix socket object o, rebuilding all
// of the checkpoint's unix sockets the first time.
func (fs *files) socket(c *image.Checkpoint, o *image.Object) (int, error) {
	if fd, ok := fs.objs[o.ID]; ok {
		return fd, nil
	}
	if _, built := fs.objs[unixBuilt]; !built {
		fs.objs[unixBuilt] = -1
		if err := fs.buildUnix(c); err != nil {
			return -1, err
		}
		if fd, ok := fs.objs[o.ID]; ok {
			return fd, nil
		}
	}
	if unixPeerOutside(c, o) {
		return -1, fmt.Errorf("unix socket %s: its peer is not in the checkpoint", o.ID)
	}
	return -1, fmt.Errorf("unix socket %s was not recreated", o.ID)
}

// unixBuilt marks in files.objs that the unix sockets were rebuilt.
const unixBuilt = "unix/built"

func (fs *files) buildUnix(c *image.Checkpoint) error {
	byID, list, err := unixPlan(c)
	if err != nil {
		return err
	}
	b := &unixBuild{fs: fs, byID: byID, listeners: listenersByName(list), senders: map[string]*usock{}}
	for _, u := range list {
		if u.typ == unix.SOCK_DGRAM && u.bind {
			b.senders[u.name] = u
		}
	}
	defer b.cleanup()
	for _, step := range []func(*usock) error{b.bound, b.pair, b.pending, b.requeue, b.connectDgram, setSockOpts} {
		for _, u := range list {
			if err := step(u); err != nil {
				return fmt.Errorf("unix socket %s (%s): %w", u.o.ID, nameOr(u.name), err)
			}
		}
	}
	for _, u := range list {
		if u.fd >= 0 {
			fs.objs[u.o.ID] = u.fd
		}
	}
	return nil
}

func nameOr(name string) string {
	if name == "" {
		return "unnamed"
	}
	return name
}

type unixBuild struct {
	fs        *files
	byID      map[string]*usock
	listeners map[listenerKey]*usock
	senders   map[string]*usock // bound datagram sockets by name
	temps     []int             // temporary sockets to close
	paths     []*usock          // temporary listeners whose file to remove
}

func (b *unixBuild) cleanup() {
	for _, fd := range b.temps {
		unix.Close(fd)
	}
	for _, u := range b.paths {
		b.as(u, func() error { return os.Remove(u.path()) })
	}
}

// as runs fn with the credentials of u's owner.
func (b *unixBuild) as(u *usock, fn func() error) error {
	return b.fs.creds.as(u.owner, fn)
}

func (b *unixBuild) newSocket(typ int) (int, error) {
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	return fd, nil
}

// bindName binds fd to u's name as u's owner, removing a stale socket file
// first, and gives the new file the recorded mode and owner (or removes it
// if it was gone at dump time).
func (b *unixBuild) bindName(fd int, u *usock) error {
	err := b.as(u, func() error {
		path := u.path()
		if path != "" {
			if err := freePath(path, true); err != nil {
				return err
			}
		}
		if err := bindAs(fd, u); err != nil {
			return fmt.Errorf("bind %s: %w", u.addr().Name, err)
		}
		if path == "" {
			return nil
		}
		if u.s.File != nil && !u.s.File.Exists {
			return os.Remove(path)
		}
		return setSocketFileOwner(u)
	})
	if err != nil {
		return fmt.Errorf("as uid %d: %w", u.owner.Creds.UID[3], err)
	}
	return nil
}

// bindAs binds fd to u's name, on a thread that has u's owner's
// credentials (and a file system context of its own). The directory of a
// path is first resolved with openat2 and RESOLVE_NO_MAGICLINKS, so a
// name that goes through /proc/self/... (which would be the restorer's)
// is refused; a relative name is bound from its directory (fchdir there
// and back), so that getsockname says name as it did.
func bindAs(fd int, u *usock) error {
	if strings.HasPrefix(u.name, "@") {
		return unix.Bind(fd, u.addr())
	}
	if u.dir == "" {
		if err := canonical(u.name); err != nil {
			return err
		}
		dfd, err := openInRoot(u.owner.Root, filepath.Dir(u.name), unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return fmt.Errorf("directory %s: %w", filepath.Dir(u.name), err)
		}
		unix.Close(dfd)
		return unix.Bind(fd, u.addr())
	}
	dfd, err := openInRoot(u.owner.Root, u.dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return fmt.Errorf("directory %s: %w", u.dir, err)
	}
	defer unix.Close(dfd)
	back, err := unix.Open(".", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(back)
	if err := unix.Fchdir(dfd); err != nil {
		return fmt.Errorf("chdir %s: %w", u.dir, err)
	}
	defer unix.Fchdir(back)
	return unix.Bind(fd, &unix.SockaddrUnix{Name: u.name})
}

// setSocketFileOwner gives the socket file u bound its recorded mode and
// owner, on the file it opens without following a symlink (never a file
// put in its place by path), with the calling thread's credentials.
func setSocketFileOwner(u *usock) error {
	path := u.path()
	opath, err := openat2(unix.AT_FDCWD, path, &unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_MAGICLINKS})
	if err != nil {
		return fmt.Errorf("socket file %s: %w", path, err)
	}
	defer unix.Close(opath)
	var st unix.Stat_t
	if err := unix.Fstat(opath, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("socket file %s was replaced by another file", path)
	}
	file := u.s.File
	if file == nil || !file.Exists {
		return nil // not recorded
	}
	if m := file.Mode & 0o777; m != st.Mode&0o777 {
		// chmod has no AT_EMPTY_PATH: through the fd's own /proc link.
		if err := unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(opath), m, 0); err != nil {
			return fmt.Errorf("chmod socket file %s: %w", path, err)
		}
	}
	if file.UID != st.Uid || file.GID != st.Gid {
		if err := unix.Fchownat(opath, "", int(file.UID), int(file.GID), unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("chown socket file %s to %d:%d: %w", path, file.UID, file.GID, err)
		}
	}
	return nil
}

// bound makes listeners and the other sockets that are not half of a pair
// made in pair: unconnected ones, datagram sockets (bound if named).
func (b *unixBuild) bound(u *usock) error {
	if u.state == unixEstablished && u.typ != unix.SOCK_DGRAM {
		return nil // pair or waiting connection
	}
	if u.typ == unix.SOCK_DGRAM && u.peer != "" && u.name == "" && b.byID[u.peer].name == "" && b.byID[u.peer].s.Peer == u.s.Ino {
		return nil // an unnamed datagram socket pair
	}
	fd, err := b.newSocket(u.typ)
	if err != nil {
		return err
	}
	u.fd = b.fs.keep(fd)
	if u.bind {
		if err := b.bindName(fd, u); err != nil {
			return err
		}
	}
	if u.state == unixListen {
		if err := unix.Listen(fd, u.s.Backlog); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	return nil
}

// pending connects the connections waiting on listener u again, in
// order, after the accepted ones (pair) went through it.
func (b *unixBuild) pending(u *usock) error {
	if u.state != unixListen {
		return nil
	}
	for _, ino := range u.s.Pending {
		cl := b.byID[image.UnixSocketID(ino)]
		if cl == nil {
			return fmt.Errorf("waiting connection %s is not in the checkpoint", image.UnixSocketID(ino))
		}
		if err := b.connect(cl, u.addr(), true); err != nil {
			return fmt.Errorf("reconnect waiting connection %s: %w", cl.o.ID, err)
		}
	}
	return nil
}

// pair makes connected pairs: a socketpair, or for a named pair a client
// connected to the listener of that name and the end accepted from it.
func (b *unixBuild) pair(u *usock) error {
	if u.fd >= 0 || u.listener != "" || u.state == unixListen {
		return nil
	}
	if u.peerClosed {
		// A stand-in for the closed end, closed once the bytes are queued.
		if u.name != "" {
			return b.accept(u, &usock{o: u.o, typ: u.typ, fd: -1, partner: -1, owner: u.owner}, false)
		}
		sp, err := unix.Socketpair(unix.AF_UNIX, u.typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("socketpair: %w", err)
		}
		u.fd, u.partner = b.fs.keep(sp[0]), sp[1]
		b.temps = append(b.temps, sp[1])
		return nil
	}
	p := b.byID[u.peer]
	if p == nil {
		return nil // peer outside: taken over from the restorer (fds 0-2)
	}
	if p.fd >= 0 {
		return nil // made with its peer
	}
	if !u.accepted && !p.accepted {
		sp, err := unix.Socketpair(unix.AF_UNIX, u.typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("socketpair: %w", err)
		}
		u.fd, p.fd = b.fs.keep(sp[0]), b.fs.keep(sp[1])
		u.partner, p.partner = p.fd, u.fd
		return nil
	}
	server, client := u, p
	if p.accepted {
		server, client = p, u
	}
	return b.accept(server, client, true)
}

// accept makes server, the accepted end of a named pair, by connecting
// client to the restored listener of server's name, or to a temporary one
// bound to it. keep says whether client is kept (else it is closed at the
// end of the rebuild).
func (b *unixBuild) accept(server, client *usock, keep bool) error {
	var lfd int
	if l := b.listener(server); l != nil {
		lfd = l.fd
	} else {
		// A temporary listener gives the accepted end its name.
		fd, err := b.newSocket(server.typ)
		if err != nil {
			return err
		}
		b.temps = append(b.temps, fd)
		err = b.as(server, func() error {
			if path := server.path(); path != "" {
				if err := freePath(path, true); err != nil {
					return err
				}
				b.paths = append(b.paths, server)
			}
			return bindAs(fd, server)
		})
		if err != nil {
			return fmt.Errorf("bind temporary listener %s as uid %d: %w", server.addr().Name, server.owner.Creds.UID[3], err)
		}
		if err := unix.Listen(fd, 1); err != nil {
			return err
		}
		lfd = fd
	}
	if err := b.connect(client, server.addr(), keep); err != nil {
		return err
	}
	fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	server.fd = b.fs.keep(fd)
	server.partner, client.partner = client.fd, server.fd
	return nil
}

// listener returns the restored listener whose name server has.
func (b *unixBuild) listener(server *usock) *usock {
	if l := b.listeners[listenerKey{server.name, server.typ}]; l != nil && l.fd >= 0 {
		return l
	}
	return nil
}

// connect makes u's socket (bound to its own name if it had one) and
// connects it to addr; keep as for accept.
func (b *unixBuild) connect(u *usock, addr *unix.SockaddrUnix, keep bool) error {
	fd, err := b.newSocket(u.typ)
	if err != nil {
		return err
	}
	u.fd = fd
	if keep {
		b.fs.keep(fd)
	} else {
		b.temps = append(b.temps, fd)
	}
	if u.bind {
		if err := b.bindName(fd, u); err != nil {
			return err
		}
	}
	if err := b.as(u, func() error { return unix.Connect(fd, addr) }); err != nil {
		if err == unix.EAGAIN {
			return fmt.Errorf("connect %s: backlog full", addr.Name)
		}
		return fmt.Errorf("connect %s: %w", addr.Name, err)
	}
	return nil
}

// requeue sends u's queued bytes or messages into it again: stream bytes
// and seqpacket records through its partner; datagrams from their sender
// when it is a socket of the checkpoint, else from an unnamed socket (the
// sender address of a datagram from outside the checkpoint is lost).
func (b *unixBuild) requeue(u *usock) error {
	if u.fd < 0 || (len(u.o.Data) == 0 && len(u.msgs) == 0) {
		return nil
	}
	if u.typ != unix.SOCK_DGRAM || u.partner >= 0 {
		if u.partner < 0 {
			return fmt.Errorf("%d queued bytes and no peer to send them", len(u.o.Data))
		}
		if err := growSndbuf(u.partner, len(u.o.Data)); err != nil {
			return err
		}
		if u.typ == unix.SOCK_STREAM {
			return writeAll(u.partner, u.o.Data)
		}
		for _, m := range u.msgs {
			// send(2), not write(2): an empty record is a record too.
			if _, err := unix.SendmsgN(u.partner, m.data, nil, nil, 0); err != nil {
				return fmt.Errorf("requeue a %d-byte record: %w", len(m.data), err)
			}
		}
		return nil
	}
	if u.name == "" {
		return fmt.Errorf("%d queued datagrams on an unnamed socket without a peer", len(u.msgs))
	}
	anon := -1
	for _, m := range u.msgs {
		from := -1
		if s := b.senders[m.sender]; m.sender != "" && s != nil && s.fd >= 0 {
			from = s.fd
			if err := growSndbuf(from, len(u.o.Data)); err != nil { // set back by setSockOpts
				return err
			}
		}
		if from < 0 {
			if anon < 0 {
				fd, err := b.newSocket(unix.SOCK_DGRAM)
				if err != nil {
					return err
				}
				b.temps = append(b.temps, fd)
				if err := growSndbuf(fd, len(u.o.Data)); err != nil {
					return err
				}
				anon = fd
			}
			from = anon
		}
		if err := b.as(u, func() error { return unix.Sendto(from, m.data, 0, u.addr()) }); err != nil {
			return fmt.Errorf("requeue a %d-byte datagram: %w", len(m.data), err)
		}
	}
	return nil
}

// connectDgram connects a datagram socket to its peer again (socket pairs
// are connected already).
func (b *unixBuild) connectDgram(u *usock) error {
	if u.typ != unix.SOCK_DGRAM || u.peer == "" || u.partner >= 0 || u.fd < 0 {
		return nil
	}
	p := b.byID[u.peer]
	if p.name == "" {
		return fmt.Errorf("connected to unnamed %s", p.o.ID)
	}
	if err := b.as(u, func() error { return unix.Connect(u.fd, p.addr()) }); err != nil {
		return fmt.Errorf("connect %s: %w", p.addr().Name, err)
	}
	return nil
}

// setSockOpts sets the recorded socket options (after the queues were
// refilled, so a send buffer grown for that is set back).
func setSockOpts(u *usock) error {
	if u.fd < 0 {
		return nil
	}
	opts := u.s.Opts
	if opts == nil {
		return nil // not recorded (format 1)
	}
	for _, o := range []struct {
		key      string
		opt, set int
		v        int
	}{{"sndbuf", unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, opts.Sndbuf}, {"rcvbuf", unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, opts.Rcvbuf},
		{"passcred", unix.SO_PASSCRED, unix.SO_PASSCRED, opts.Passcred}, {"passsec", unix.SO_PASSSEC, unix.SO_PASSSEC, opts.Passsec}} {
		v := o.v
		if cur, err := unix.GetsockoptInt(u.fd, unix.SOL_SOCKET, o.opt); err == nil && cur == v {
			continue
		}
		if o.opt != o.set {
			v /= 2 // getsockopt reports the doubled size the kernel keeps
		}
		if err := unix.SetsockoptInt(u.fd, unix.SOL_SOCKET, o.set, v); err != nil {
			return fmt.Errorf("set %s %d: %w", o.key, v, err)
		}
	}
	return nil
}

// growSndbuf makes fd's send buffer hold n queued bytes (and their
// overhead).
func growSndbuf(fd, n int) error {
	cur, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF)
	if err != nil || cur >= 2*n+(64<<10) {
		return err
	}
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 2*n+(64<<10))
}

func writeAll(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if err != nil {
			return fmt.Errorf("requeue %d bytes: %w", len(data), err)
		}
		data = data[n:]
	}
	return nil
}

// relisten calls listen again, from the task and once its credentials are
// set, on each listening unix socket it is the first holder of: listen
// records the caller's pid and credentials, which SO_PEERCRED gives every
// client that connects later, and the restorer's own listen recorded root
// and the restorer's pid. (Sockets connected during the rebuild keep the
// restorer's pid and credentials as their peer's.)
func (p *target) relisten() error {
	if p.t.FilesOf != 0 {
		return nil // the table's owner holds them
	}
	for _, f := range p.t.FDs {
		o := p.r.c.Object(f.Object)
		if f.Object == "" || o == nil || o.Kind != image.ObjUnixSocket {
			continue
		}
		us, err := image.ParseUnixSocket(o, false)
		if err != nil || us.State != image.UnixListen {
			continue
		}
		if h := objectHolder(p.r.c, o.ID); h != p.t {
			continue
		}
		if _, err := p.sys(p.pid, unix.SYS_LISTEN, uint64(f.Num), uint64(us.Backlog)); err != nil {
			return fmt.Errorf("fd %d: listen again as the task: %w", f.Num, err)
		}
	}
	return nil
}
