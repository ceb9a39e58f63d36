package tests

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startUnixsock starts tests/progs/unixsock with args, its output in a
// file, and kills it when the test ends.
func startUnixsock(t *testing.T, args ...string) *program {
	t.Helper()
	return startArgv(t, "unixsock "+args[0], append([]string{buildProg(t, "unixsock")}, args...))
}

// whoTicks counts the tick lines printed by who ("A", "B", ...).
func whoTicks(p *program, who string) int {
	n := 0
	for _, l := range p.ticks() {
		if strings.HasPrefix(l, who+" ") {
			n++
		}
	}
	return n
}

func waitWhoTicks(t *testing.T, p *program, who string, n int) {
	t.Helper()
	start := whoTicks(p, who)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if whoTicks(p, who) >= start+n {
			return
		}
	}
	b, _ := os.ReadFile(p.Out)
	t.Fatalf("%s printed no %d new ticks in 20s; output:\n%s", who, n, b)
}

// TestRestoreUnixServer dumps (--kill) a server listening on a path with
// an accepted connection (bytes in flight both ways), a connection not yet
// accepted and a datagram socket bound to a path with datagrams queued both
// ways; restores it from the mount; the processes go on talking, the
// waiting connection is accepted later, and a new client connects to the
// restored listener and is served.
func TestRestoreUnixServer(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	p := startUnixsock(t, "server", dir)
	for _, who := range []string{"A", "C", "S"} {
		waitWhoTicks(t, p, who, 3)
	}
	root := p.Pid
	pids := treePids(root)
	if len(pids) != 4 {
		t.Fatalf("tree %v, want server and 3 clients", pids)
	}
	ckpt, _ := dumpKill(t, p.Pid)

	// The tree names the sockets' paths.
	infos := objectInfos(t, ckpt)
	var listener, dgram, waiting, accepted, client, replies bool
	data := func(id string) int {
		b, _ := os.ReadFile(filepath.Join(ckpt, "objects", id, "data"))
		return len(b)
	}
	for id, info := range infos {
		switch {
		case strings.Contains(info, "name: "+strconv.Quote(dir+"/sock")+"\n") && strings.Contains(info, "state: 1\n"):
			accepted = data(id) > 0 // A's numbers, not read yet
			peer := strings.Fields(info[strings.Index(info, "peer: "):])[1]
			client = data("unix-"+peer) > 0 // the replies A has not read yet
			t.Logf("objects/%s/info (%d bytes queued):\n%s", id, data(id), info)
		case strings.Contains(info, "name: "+strconv.Quote(dir+"/dgram-client")+"\n"):
			replies = strings.Count(info, "msg: ") >= 3 && strings.Contains(info, " "+strconv.Quote(dir+"/dgram")+"\n") // with their sender
			t.Logf("objects/%s/info:\n%s", id, info)
		case strings.Contains(info, "name: "+strconv.Quote(dir+"/sock")+"\n") && strings.Contains(info, "state: 10\n"):
			listener = strings.Contains(info, "backlog: 8\n") && strings.Contains(info, "pending: ")
			t.Logf("objects/%s/info:\n%s", id, info)
		case strings.Contains(info, "name: "+strconv.Quote(dir+"/dgram")+"\n"):
			dgram = true
			t.Logf("objects/%s/info:\n%s", id, info)
		case strings.Contains(info, "listener: unix-"):
			waiting = true
		}
	}
	if !listener || !dgram || !waiting {
		t.Fatalf("objects do not show the listener with backlog and a waiting connection (%v), the datagram socket (%v), the waiting client (%v):\n%v", listener, dgram, waiting, infos)
	}
	if !accepted || !client || !replies {
		t.Fatalf("objects do not show bytes queued on the accepted socket (%v), on A's socket (%v), datagrams queued for C (%v):\n%v", accepted, client, replies, infos)
	}

	// The killed server's socket files are still there: restore replaces them.
	if st, err := os.Lstat(filepath.Join(dir, "sock")); err != nil || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("stale socket file: %v", err)
	}
	// A path some live socket listens on is not taken over: the restore
	// refuses before creating anything.
	os.Remove(filepath.Join(dir, "sock"))
	busy, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, err := ckptfsErr(t, "restore", ckpt)
	busy.Close() // removes the file
	if err == nil || !strings.Contains(errOut, "unix socket path "+dir+"/sock is in use") {
		t.Fatalf("restore onto a path in use: %v %s", err, errOut)
	}
	t.Logf("refused: %s", strings.TrimSpace(errOut))
	for _, pid := range pids {
		if _, err := os.Stat("/proc/" + itoa(pid)); err == nil {
			t.Fatalf("pid %d exists after a refused restore", pid)
		}
	}

	restoreFrom(t, ckpt, pids)
	for _, who := range []string{"A", "C", "S"} {
		waitWhoTicks(t, p, who, 5)
	}
	p.checkHealthy(t)
	// The restored server's listener and accepted socket are bound to the path.
	if n := boundSockets(t, root, filepath.Join(dir, "sock")); n != 2 {
		t.Errorf("restored server holds %d sockets named %s/sock, want 2 (listener, accepted)", n, dir)
	}
	if whoTicks(p, "B") != 0 {
		t.Fatal("B was served before the server accepted it")
	}

	// Let the server accept: B first (it was waiting before the dump), then us.
	if err := os.WriteFile(filepath.Join(dir, "open"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitWhoTicks(t, p, "B", 3)
	c, err := net.DialTimeout("unix", filepath.Join(dir, "sock"), 5*time.Second)
	if err != nil {
		t.Fatalf("connect to the restored listener: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var b [8]byte
	if _, err := c.Read(b[:]); err != nil || binary.LittleEndian.Uint64(b[:]) != 42 {
		t.Fatalf("greeting %v %v", b, err)
	}
	for i := uint64(1); i <= 3; i++ {
		binary.LittleEndian.PutUint64(b[:], i)
		if _, err := c.Write(b[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(b[:]); err != nil || binary.LittleEndian.Uint64(b[:]) != i+1000000 {
			t.Fatalf("reply %v %v", b, err)
		}
	}
	for _, who := range []string{"A", "B", "C", "S"} {
		waitWhoTicks(t, p, who, 2)
	}
	p.checkHealthy(t)
}

// TestRestoreUnixOutsidePeerless: a unix socket connected to one outside
// the dumped tree (here, the test's own listener, or a datagram socket as
// /dev/log is) is dumped as one whose peer closed (peer-closed: yes) and
// restored with no peer, as if the outside process had exited; the program
// ticks on after the restore.
func TestRestoreUnixOutsidePeerless(t *testing.T) {
	for _, mode := range []string{"outside", "outside-dgram"} {
		t.Run(mode, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "outside.sock")
			if mode == "outside" {
				l, err := net.Listen("unix", path)
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				go func() {
					for {
						c, err := l.Accept()
						if err != nil {
							return
						}
						defer c.Close()
					}
				}()
			} else {
				c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
			}
			p := startUnixsock(t, mode, path)
			m := mountStore(t, filepath.Join(t.TempDir(), "store"))
			id := lastLine(ckptfs(t, "dump", "-s", m.store, "--kill", itoa(p.Pid)))
			pid := p.Pid
			p.kill()
			waitGone(t, pid)
			infos, _ := filepath.Glob(filepath.Join(m.mnt, id, "objects", "unix-*", "info"))
			if len(infos) != 1 {
				t.Fatalf("unix socket objects %v, want one", infos)
			}
			if b, _ := os.ReadFile(infos[0]); !strings.Contains(string(b), "peer-closed: yes\n") {
				t.Fatalf("%s:\n%s", infos[0], b)
			}
			unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
			t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
			ckptfs(t, "restore", filepath.Join(m.mnt, id))
			t.Cleanup(func() {
				unix.Kill(pid, unix.SIGKILL)
				waitGone(t, pid)
			})
			p.Pid = pid
			waitWhoTicks(t, p, "O", 2)
			p.checkHealthy(t)
		})
	}
}

// TestRestoreUnixVariety restores a parent and child sharing a named
// stream pair (the child bound to a path, connected to an abstract listener
// the parent closed after accepting), a seqpacket pair and a datagram pair
// with records queued, and a socket whose peer was closed with bytes still
// unread; names, boundaries and the EOF must be as before.
func TestRestoreUnixVariety(t *testing.T) {
	dir := t.TempDir()
	p := startUnixsock(t, "variety", dir)
	for _, who := range []string{"P", "K"} {
		waitWhoTicks(t, p, who, 3)
	}
	pids := treePids(p.Pid)
	if len(pids) != 2 {
		t.Fatalf("tree %v", pids)
	}
	ckpt, _ := dumpKill(t, p.Pid)
	all := ""
	for _, info := range objectInfos(t, ckpt) {
		all += info + "\n"
	}
	for _, want := range []string{"peer-closed: yes", "name: \"@ckptfs-test-" + itoa(p.Pid), "name: " + strconv.Quote(dir+"/cli") + "\n",
		"type: 5\n", "type: 2\n", "-\nmsg: ", "name: \"rel\"\ndir: " + strconv.Quote(dir) + "\n"} {
		if !strings.Contains(all, want) {
			t.Fatalf("objects do not say %q:\n%s", want, all)
		}
	}
	restoreFrom(t, ckpt, pids)
	for _, who := range []string{"P", "K"} {
		waitWhoTicks(t, p, who, 4)
	}
	p.checkHealthy(t)
	if err := os.WriteFile(filepath.Join(dir, "read-closed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitWhoTicks(t, p, "P", 2)
	b, _ := os.ReadFile(p.Out)
	if !strings.Contains(string(b), "closed ok\n") {
		t.Fatalf("the socket whose peer was closed did not read as before:\n%s", b)
	}
	p.checkHealthy(t)
}

// objectInfos reads objects/<id>/info of a checkpoint directory.
func objectInfos(t *testing.T, ckpt string) map[string]string {
	t.Helper()
	infos := map[string]string{}
	ents, err := os.ReadDir(filepath.Join(ckpt, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(ckpt, "objects", e.Name(), "info"))
		infos[e.Name()] = string(b)
	}
	return infos
}

// TestDumpUnixLeavesRunning dumps (without --kill) the programs of the
// tests above twice: peeking their queues must not change them.
func TestDumpUnixLeavesRunning(t *testing.T) {
	dir := t.TempDir()
	srv := startUnixsock(t, "server", dir)
	vdir := t.TempDir()
	v := startUnixsock(t, "variety", vdir)
	store := filepath.Join(t.TempDir(), "store")
	for i := 0; i < 2; i++ {
		for _, p := range []*program{srv, v} {
			ckptfs(t, "dump", "-s", store, itoa(p.Pid))
			p.waitTicks(t, 3)
		}
	}
	os.WriteFile(filepath.Join(dir, "open"), nil, 0o644)
	os.WriteFile(filepath.Join(vdir, "read-closed"), nil, 0o644)
	waitWhoTicks(t, srv, "B", 3)
	waitWhoTicks(t, v, "P", 2)
	for _, who := range []string{"A", "C", "S"} {
		waitWhoTicks(t, srv, who, 2)
	}
	srv.checkHealthy(t)
	v.checkHealthy(t)
	if b, _ := os.ReadFile(v.Out); !strings.Contains(string(b), "closed ok\n") {
		t.Fatalf("closed socket:\n%s", b)
	}
}

// TestDumpRefusesUnixQueued: data sent on a connection not yet accepted
// (it cannot be read without accepting) and fds in flight (SCM_RIGHTS)
// make the dump refuse, naming pid, fd and why; the program runs on.
func TestDumpRefusesUnixQueued(t *testing.T) {
	for _, c := range []struct{ mode, want string }{
		{"eager", "data sent on a connection not yet accepted"},
		{"rights", "fds in flight (SCM_RIGHTS)"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			p := startUnixsock(t, c.mode, t.TempDir())
			store := filepath.Join(t.TempDir(), "store")
			_, stderr, err := ckptfsErr(t, "dump", "-s", store, itoa(p.Pid))
			if err == nil {
				t.Fatal("dump succeeded")
			}
			if !strings.Contains(stderr, "process "+itoa(p.Pid)+" fd 3 ") || !strings.Contains(stderr, c.want) {
				t.Fatalf("dump error %q does not say %q", stderr, c.want)
			}
			t.Logf("refused: %s", strings.TrimSpace(stderr))
			noCheckpoint(t, store)
			p.waitTicks(t, 3)
			p.checkHealthy(t)
		})
	}
}

// boundSockets counts the sockets held by pid's fds that /proc/net/unix
// shows with the name path.
func boundSockets(t *testing.T, pid int, path string) int {
	t.Helper()
	held := map[string]bool{}
	ents, _ := os.ReadDir("/proc/" + itoa(pid) + "/fd")
	for _, e := range ents {
		l, _ := os.Readlink("/proc/" + itoa(pid) + "/fd/" + e.Name())
		if strings.HasPrefix(l, "socket:[") {
			held[strings.Trim(l[7:], "[]")] = true
		}
	}
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 8 && f[7] == path && held[f[6]] {
			n++
		}
	}
	return n
}

// TestRestoreUnixPrefork restores a listener shared by a parent and two
// workers blocked in accept(): one socket again in three processes, and the
// workers' accept, restarted, serves new clients.
func TestRestoreUnixPrefork(t *testing.T) {
	dir := t.TempDir()
	p := startUnixsock(t, "prefork", dir)
	p.waitTicks(t, 2)
	pids := treePids(p.Pid)
	if len(pids) != 3 {
		t.Fatalf("tree %v", pids)
	}
	ckpt, _ := dumpKill(t, p.Pid)
	restoreFrom(t, ckpt, pids)
	p.waitTicks(t, 2)
	var links []string
	for _, pid := range pids {
		l, _ := os.Readlink("/proc/" + itoa(pid) + "/fd/3")
		links = append(links, l)
	}
	if links[0] == "" || links[1] != links[0] || links[2] != links[0] {
		t.Fatalf("restored listener fds %v: not one socket", links)
	}
	for i := uint64(0); i < 6; i++ {
		c, err := net.DialTimeout("unix", filepath.Join(dir, "sock"), 5*time.Second)
		if err != nil {
			t.Fatalf("connect to the restored listener: %v", err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var b [8]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || binary.LittleEndian.Uint64(b[:]) != 42 {
			t.Fatalf("greeting %v %v", b, err)
		}
		binary.LittleEndian.PutUint64(b[:], i)
		c.Write(b[:])
		if _, err := io.ReadFull(c, b[:]); err != nil || binary.LittleEndian.Uint64(b[:]) != i+1000000 {
			t.Fatalf("reply %v %v", b, err)
		}
		c.Close()
	}
	p.checkHealthy(t)
}
