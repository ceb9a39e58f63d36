package restorer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// TestFreePath: a stale socket file (its socket closed) is removed, a
// path some socket listens on or a regular file is refused.
func TestFreePath(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale")
	fd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: stale}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if err := freePath(stale, false); err != nil {
		t.Fatalf("check stale: %v", err)
	}
	if err := freePath(stale, true); err != nil {
		t.Fatalf("free stale: %v", err)
	}
	if _, err := os.Lstat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale file still there: %v", err)
	}
	for _, typ := range []int{unix.SOCK_STREAM, unix.SOCK_DGRAM} {
		live := filepath.Join(dir, "live")
		fd, _ := unix.Socket(unix.AF_UNIX, typ, 0)
		defer unix.Close(fd)
		os.Remove(live)
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: live}); err != nil {
			t.Fatal(err)
		}
		if typ == unix.SOCK_STREAM {
			unix.Listen(fd, 1)
		}
		if err := freePath(live, true); err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("type %d: path in use: %v", typ, err)
		}
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	if err := freePath(file, true); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file: %v", err)
	}
	if err := freePath(filepath.Join(dir, "nodir", "x"), false); err == nil {
		t.Fatal("missing directory accepted")
	}
}

func unixObj(id string, info ...string) *image.Object {
	return &image.Object{ID: id, Kind: image.ObjUnixSocket, Info: append([]string{"ino: " + id[5:]}, info...)}
}

// TestBuildUnix rebuilds, for stream and seqpacket sockets, with a path
// and an abstract name: a listener with an accepted connection whose client
// was bound to a path, with data queued both ways, and a waiting
// connection; names, peers, data and the accept order must be as recorded.
func TestBuildUnix(t *testing.T) {
	for _, typ := range []string{"1", "5"} {
		for _, abstract := range []bool{false, true} {
			dir := t.TempDir()
			sock, cli := filepath.Join(dir, "sock"), filepath.Join(dir, "cli")
			if abstract {
				sock = "@ckptfs-test-" + filepath.Base(dir)
			}
			c := &image.Checkpoint{Objects: []*image.Object{
				unixObj("unix-1", "type: "+typ, "state: 10", "peer: 0", image.TextLine("name", sock), "backlog: 5", "pending: 4"),
				unixObj("unix-2", "type: "+typ, "state: 1", "peer: 3", image.TextLine("name", sock)),
				unixObj("unix-3", "type: "+typ, "state: 1", "peer: 2", image.TextLine("name", cli), "file: yes", "mode: 600", "uid: 0", "gid: 0"),
				unixObj("unix-4", "type: "+typ, "state: 1", "peer: 0", image.TextLine("name", ""), "listener: unix-1"),
			}}
			c.Objects[1].Data = []byte("to server")
			c.Objects[2].Data = []byte("to client")
			if typ == "5" {
				c.Objects[1].Info = append(c.Objects[1].Info, "msg: 3 -", "msg: 0 -", "msg: 6 -")
				c.Objects[2].Info = append(c.Objects[2].Info, "msg: 9 -")
			}
			buildUnixCase(t, c, sock, cli, typ == "5")
		}
	}
}

func buildUnixCase(t *testing.T, c *image.Checkpoint, sock, cli string, records bool) {
	t.Helper()
	for _, o := range c.Objects {
		c.Tasks = append(c.Tasks, &image.Task{FDs: []*image.FD{{Kind: image.FDSocket, Object: o.ID}}})
	}
	fs := newFiles(nil)
	defer fs.close()
	fds := map[string]int{}
	for _, o := range c.Objects {
		fd, err := fs.socket(c, o)
		if err != nil {
			t.Fatal(err)
		}
		fds[o.ID] = fd
	}
	name := func(fd int, peer bool) string {
		get := unix.Getsockname
		if peer {
			get = unix.Getpeername
		}
		sa, err := get(fd)
		if err != nil {
			t.Fatal(err)
		}
		return sa.(*unix.SockaddrUnix).Name
	}
	if name(fds["unix-1"], false) != sock || name(fds["unix-2"], false) != sock || name(fds["unix-2"], true) != cli ||
		name(fds["unix-3"], false) != cli || name(fds["unix-3"], true) != sock {
		t.Fatalf("names differ: %q %q %q %q %q", name(fds["unix-1"], false), name(fds["unix-2"], false), name(fds["unix-2"], true),
			name(fds["unix-3"], false), name(fds["unix-3"], true))
	}
	if st, err := os.Stat(cli); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("client socket file %v %v", st, err)
	}
	buf := make([]byte, 64)
	want := []string{"to server"}
	if records {
		want = []string{"to ", "", "server"}
	}
	for _, w := range want {
		if n, _ := unix.Read(fds["unix-2"], buf); string(buf[:n]) != w {
			t.Fatalf("server read %q, want %q", buf[:n], w)
		}
	}
	if n, _ := unix.Read(fds["unix-3"], buf); string(buf[:n]) != "to client" {
		t.Fatalf("client read %q", buf[:n])
	}
	// The waiting connection is the one accept returns.
	a, _, err := unix.Accept(fds["unix-1"])
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(a)
	unix.Write(fds["unix-4"], []byte("me"))
	if n, _ := unix.Read(a, buf); string(buf[:n]) != "me" {
		t.Fatalf("accepted %q", buf[:n])
	}
}

// TestBuildUnixPeerClosed: an accepted socket whose client was closed keeps
// its name and reads its queued bytes, then EOF.
func TestBuildUnixPeerClosed(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "sock")
	c := &image.Checkpoint{Objects: []*image.Object{
		unixObj("unix-1", "type: 1", "state: 1", "peer: 99", image.TextLine("name", sock), "peer-closed: yes"),
	}}
	c.Objects[0].Data = []byte("bye")
	c.Tasks = []*image.Task{{FDs: []*image.FD{{Kind: image.FDSocket, Object: "unix-1"}}}}
	fs := newFiles(nil)
	defer fs.close()
	fd, err := fs.socket(c, c.Objects[0])
	if err != nil {
		t.Fatal(err)
	}
	if sa, err := unix.Getsockname(fd); err != nil || sa.(*unix.SockaddrUnix).Name != sock {
		t.Fatalf("name %v %v", sa, err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("the temporary listener's file is left: %v", err)
	}
	buf := make([]byte, 16)
	n, err := unix.Read(fd, buf)
	if string(buf[:n]) != "bye" {
		t.Fatalf("read %q %v", buf[:n], err)
	}
	if n, err := unix.Read(fd, buf); n != 0 || err != nil {
		t.Fatalf("read after the bytes: %d %v, want EOF", n, err)
	}
}

// TestBuildUnixDatagrams: datagrams queued on a bound socket come back in
// order with their boundaries and their sender's address when the sender
// is a socket of the checkpoint (none otherwise); a socket connected to
// another is connected again.
func TestBuildUnixDatagrams(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	c := &image.Checkpoint{Objects: []*image.Object{
		unixObj("unix-1", "type: 2", "state: 7", "peer: 0", image.TextLine("name", a), image.MsgLine(2, b), "msg: 0 -", image.MsgLine(3, filepath.Join(dir, "gone"))),
		unixObj("unix-2", "type: 2", "state: 1", "peer: 1", image.TextLine("name", b)),
	}}
	c.Objects[0].Data = []byte("hiyou")
	for _, o := range c.Objects {
		c.Tasks = append(c.Tasks, &image.Task{FDs: []*image.FD{{Kind: image.FDSocket, Object: o.ID}}})
	}
	fs := newFiles(nil)
	defer fs.close()
	fd, err := fs.socket(c, c.Objects[0])
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	for _, want := range []struct{ data, from string }{{"hi", b}, {"", ""}, {"you", ""}} {
		n, from, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil || string(buf[:n]) != want.data {
			t.Fatalf("datagram %q %v, want %q", buf[:n], err, want.data)
		}
		name := ""
		if sa, ok := from.(*unix.SockaddrUnix); ok {
			name = sa.Name
		}
		if name != want.from {
			t.Fatalf("datagram %q from %q, want %q", want.data, name, want.from)
		}
	}
	bfd := fs.objs["unix-2"]
	if sa, err := unix.Getpeername(bfd); err != nil || sa.(*unix.SockaddrUnix).Name != a {
		t.Fatalf("b's peer %v %v", sa, err)
	}
}
