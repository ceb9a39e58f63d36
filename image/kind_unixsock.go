package image

import (
	"math"
	"strconv"
	"strings"
)

// UnixSocket is the info of a unix socket (objects/unix-<ino>), one object
// however many fds and tasks hold it; its data are the bytes queued for
// reading (a datagram or seqpacket socket's messages one after another,
// each with a Msgs entry). docs/tree-format.md "unix sockets" says what
// each line means. Lines, in this order:
//
//	ino: 4242                   the socket's inode
//	type: 1                     SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5
//	state: 1                    1 connected, 7 unconnected, 10 listening
//	peer: 4243                  the other end's inode, 0: none
//	name: "/run/x.sock"         bound name, "@..." abstract, "" unnamed
//	backlog: 128                listening: listen's argument
//	pending: 4250 4252          listening: the connections waiting, in accept order
//	listener: unix-4249         a connection waiting on that listener
//	peer-closed: yes            the other end was closed
//	dir: "/home/u"              a relative name's directory
//	file: yes                   a path name's socket file: yes (mode, uid, gid follow) or no
//	mode: 755
//	uid: 1000
//	gid: 1000
//	sndbuf: 212992              socket options, as getsockopt says
//	rcvbuf: 212992
//	passcred: 0
//	passsec: 0
//	msg: 5 "/run/client.sock"   one per queued message: its length and sender ("-": none)
type UnixSocket struct {
	Ino        uint64
	Type       int
	State      int
	Peer       uint64
	Name       string
	Backlog    int      // State UnixListen only
	Pending    []uint64 // State UnixListen only
	Listener   string   // object id of the listener this connection waits on
	PeerClosed bool
	Dir        string
	File       *UnixSocketFile // nil: no path name
	Opts       *UnixSocketOpts // nil: not recorded (format 1)
	Msgs       []UnixMsg
}

// Unix socket states (the kernel reuses the TCP ones).
const (
	UnixConnected   = 1
	UnixUnconnected = 7
	UnixListen      = 10
)

// UnixSocketFile is the file a path-bound socket made.
type UnixSocketFile struct {
	Exists   bool // false: removed (or replaced) since the bind
	Mode     uint32
	UID, GID uint32
}

// UnixSocketOpts are the socket options a restore sets again.
type UnixSocketOpts struct {
	Sndbuf, Rcvbuf, Passcred, Passsec int
}

// UnixMsg is one queued datagram or seqpacket record.
type UnixMsg struct {
	Len    int
	Sender string // "" for none
}

// UnixSocketID names the object of the unix socket with inode ino.
func UnixSocketID(ino uint64) string { return "unix-" + u64(ino) }

// Info renders u as its info lines.
func (u *UnixSocket) Info() []string {
	var w lineWriter
	w.add("ino", "%d", u.Ino)
	w.add("type", "%d", u.Type)
	w.add("state", "%d", u.State)
	w.add("peer", "%d", u.Peer)
	w.text("name", u.Name)
	if u.State == UnixListen {
		w.add("backlog", "%d", u.Backlog)
		if len(u.Pending) > 0 {
			var p []string
			for _, ino := range u.Pending {
				p = append(p, u64(ino))
			}
			w.add("pending", "%s", strings.Join(p, " "))
		}
	}
	if u.Listener != "" {
		w.add("listener", "%s", u.Listener)
	}
	if u.PeerClosed {
		w.add("peer-closed", "yes")
	}
	if u.Dir != "" {
		w.text("dir", u.Dir)
	}
	if f := u.File; f != nil {
		w.add("file", "%s", yesNo(f.Exists))
		if f.Exists {
			w.add("mode", "%o", f.Mode)
			w.add("uid", "%d", f.UID)
			w.add("gid", "%d", f.GID)
		}
	}
	if o := u.Opts; o != nil {
		w.add("sndbuf", "%d", o.Sndbuf)
		w.add("rcvbuf", "%d", o.Rcvbuf)
		w.add("passcred", "%d", o.Passcred)
		w.add("passsec", "%d", o.Passsec)
	}
	for _, m := range u.Msgs {
		w = append(w, MsgLine(m.Len, m.Sender))
	}
	return w
}

// Stream reports a connection-oriented socket (stream or seqpacket).
func (u *UnixSocket) Stream() bool { return u.Type == 1 || u.Type == 5 }

var unixKeys = []string{"ino", "type", "state", "peer", "name", "backlog", "pending", "listener", "peer-closed",
	"dir", "file", "mode", "uid", "gid", "sndbuf", "rcvbuf", "passcred", "passsec", "msg"}

// ParseUnixSocket reads the info of unix socket object o (its data too).
// With strict false, a name or sender a store's older manifest holds raw
// is taken as it is.
func ParseUnixSocket(o *Object, strict bool) (*UnixSocket, error) {
	k := readKindLines("object "+o.ID, o.Info, unixKeys, []string{"msg"}, strict)
	u := &UnixSocket{Ino: k.uint("ino", 10, 64), Type: int(k.int("type", 0, 15)), State: int(k.int("state", 0, 15)),
		Peer: k.uint("peer", 10, 64), Listener: k.opt("listener"), PeerClosed: k.flag("peer-closed")}
	text := func(key string) string {
		if !strict && !strings.HasPrefix(k.opt(key), `"`) {
			return k.opt(key)
		}
		return k.text(key)
	}
	k.str("name")
	u.Name, u.Dir = text("name"), text("dir")
	if k.err == nil && u.Type != 1 && u.Type != 2 && u.Type != 5 {
		k.fail("type %d is not stream (1), dgram (2) or seqpacket (5)", u.Type)
	}
	if u.State == UnixListen {
		u.Backlog = int(k.intOpt("backlog", 0, math.MaxInt32))
		for _, p := range strings.Fields(k.opt("pending")) {
			ino, err := strconv.ParseUint(p, 10, 64)
			if err != nil || ino == 0 {
				k.fail("pending: bad inode %.30q", p)
			}
			u.Pending = append(u.Pending, ino)
		}
	}
	if id, ok := strings.CutPrefix(u.Listener, "unix-"); u.Listener != "" && (!ok || !decimal(id)) {
		k.fail("listener %.40q is not unix-<inode>", u.Listener)
	}
	if k.has("file") {
		u.File = &UnixSocketFile{Exists: k.flag("file")}
		if u.File.Exists {
			u.File.Mode = uint32(k.uintOpt("mode", 8, 32))
			u.File.UID = uint32(k.uintOpt("uid", 10, 32))
			u.File.GID = uint32(k.uintOpt("gid", 10, 32))
		}
	}
	if k.has("sndbuf") {
		u.Opts = &UnixSocketOpts{Sndbuf: int(k.int("sndbuf", 0, math.MaxInt32)), Rcvbuf: int(k.int("rcvbuf", 0, math.MaxInt32)),
			Passcred: int(k.int("passcred", 0, 1)), Passsec: int(k.int("passsec", 0, 1))}
	}
	total := 0
	for _, v := range k.all("msg") {
		ls, sender, _ := strings.Cut(v, " ")
		n, err := strconv.Atoi(ls)
		switch {
		case err != nil || n < 0 || total+n > len(o.Data):
			k.fail("bad message line %.60q", "msg: "+v)
		case sender == "-":
			sender = ""
		case strings.HasPrefix(sender, `"`) || strict:
			if sender, err = UnquoteText(sender); err != nil {
				k.fail("msg: sender: %v", err)
			}
		}
		total += n
		u.Msgs = append(u.Msgs, UnixMsg{Len: n, Sender: sender})
	}
	if k.err == nil && u.Type != 1 && total != len(o.Data) {
		k.fail("messages of %d bytes, data of %d", total, len(o.Data))
	}
	return u, k.err
}

func decimal(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil && s != ""
}

func parseUnixInfo(o *Object, strict bool) ([]string, error) {
	u, err := ParseUnixSocket(o, strict)
	return u.Info(), err
}
