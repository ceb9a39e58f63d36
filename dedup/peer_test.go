package dedup

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// serveT serves s on its socket until the test ends and returns a client.
func serveT(t *testing.T, s *Store) *Client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	waitSocket(t, s.Dir(), done)
	// The socket exists from bind(2) on, before listen(2): until then a
	// connect is refused.
	c, err := Dial(s.Dir())
	for errors.Is(err, syscall.ECONNREFUSED) {
		select {
		case err := <-done:
			t.Fatalf("serve: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		c, err = Dial(s.Dir())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitSocket waits until the socket of dir exists (or Serve failed).
func waitSocket(t *testing.T, dir string, done chan error) {
	t.Helper()
	for {
		if _, err := os.Stat(filepath.Join(dir, SocketName)); err == nil {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("serve: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// logLines collects what Serve logs.
type logLines struct {
	mu    sync.Mutex
	lines []string
	added chan struct{}
}

func newLog(s *Store) *logLines {
	l := &logLines{added: make(chan struct{}, 16)}
	s.SetLogf(func(f string, a ...any) {
		l.mu.Lock()
		l.lines = append(l.lines, fmt.Sprintf(f, a...))
		l.mu.Unlock()
		l.added <- struct{}{}
	})
	return l
}

func (l *logLines) wait(t *testing.T, want string) {
	t.Helper()
	for range l.added {
		l.mu.Lock()
		all := strings.Join(l.lines, "\n")
		l.mu.Unlock()
		if strings.Contains(all, want) {
			return
		}
	}
}

func rawDial(t *testing.T, dir string) net.Conn {
	t.Helper()
	conn, err := net.Dial("unix", filepath.Join(dir, SocketName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestHandshakeRefusesOtherVersion(t *testing.T) {
	s := openT(t)
	log := newLog(s)
	serveT(t, s)

	// A client of a newer protocol is told why and logged.
	conn := rawDial(t, s.Dir())
	fmt.Fprintf(conn, "ckptfs-store 99\n")
	answer, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.Contains(answer, "refused") || !strings.Contains(answer, "protocol 2") {
		t.Fatalf("server answered a protocol-99 hello with %q", answer)
	}
	log.wait(t, "client speaks protocol \"99\"")

	// A client of protocol 1 (no hello, net/rpc at once) is logged too.
	conn = rawDial(t, s.Dir())
	conn.Write([]byte{0x20, 0xff, 0x81, 0x03, 0x01})
	conn.(*net.UnixConn).CloseWrite()
	io.Copy(io.Discard, conn)
	log.wait(t, "sent no hello")
}

func TestClientRefusesOtherVersionServer(t *testing.T) {
	for _, answer := range []string{"ckptfs-store 3 ok\n", "", "ckptfs-store 1 refused: too new\n"} {
		dir := t.TempDir()
		ln, err := net.Listen("unix", filepath.Join(dir, SocketName))
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			readLine(c)
			io.WriteString(c, answer)
			c.Close()
		}()
		_, err = Dial(dir)
		ln.Close()
		if !errors.Is(err, ErrProtocol) {
			t.Fatalf("server answering %q: Dial gave %v, want ErrProtocol", answer, err)
		}
		t.Logf("answer %q: %v", answer, err)
	}
}

// The tests below run a helper process as uid 65534 (nobody): the test
// binary itself, copied where nobody can execute it, started by setpriv.

const helperEnv = "CKPTFS_DEDUP_TEST_HELPER"

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(runHelper(h))
	}
	os.Exit(m.Run())
}

// runHelper is the helper process: "dial DIR" connects to the store socket
// of DIR and prints the error; "serve DIR" opens a store in DIR, serves
// it and prints "ready" once it listens.
func runHelper(h string) int {
	verb, dir, _ := strings.Cut(h, " ")
	switch verb {
	case "dial":
		conn, err := net.Dial("unix", filepath.Join(dir, SocketName))
		if err != nil {
			fmt.Println("connect:", err)
			return 0
		}
		if err := clientHandshake(conn.(*net.UnixConn), dir); err != nil {
			fmt.Println("handshake:", err)
			return 0
		}
		fmt.Println("served")
		return 0
	case "serve":
		s, err := Open(dir)
		if err != nil {
			fmt.Println("open:", err)
			return 1
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve(context.Background(), nil) }()
		for {
			if _, err := os.Stat(filepath.Join(dir, SocketName)); err == nil {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin) // until the test closes our stdin
		return 0
	}
	return 2
}

// asNobody starts the helper as uid/gid 65534.
func asNobody(t *testing.T, arg string) *exec.Cmd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a helper as another uid")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv(1) to run a helper as another uid")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(publicDir(t), "dedup.test")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups", bin)
	cmd.Env = append(os.Environ(), helperEnv+"="+arg)
	return cmd
}

// publicDir is a temporary directory that uid 65534 may enter.
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ckptfs-dedup-public-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOtherUserCannotUseStoreSocket(t *testing.T) {
	s, err := Open(filepath.Join(publicDir(t), "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	log := newLog(s)
	serveT(t, s)

	// As set up (store directory 0700) nobody cannot even reach the socket.
	out, err := asNobody(t, "dial "+s.Dir()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("nobody dialing the store: %v %s", err, out)
	}
	// With the directory and the socket opened up by mistake, the server
	// still refuses it (SO_PEERCRED) and says so on both sides.
	os.Chmod(s.Dir(), 0o755)
	os.Chmod(filepath.Join(s.Dir(), SocketName), 0o777)
	out, err = asNobody(t, "dial "+s.Dir()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "uid 65534 may not use the store") {
		t.Fatalf("nobody dialing an opened-up store: %v %s", err, out)
	}
	log.wait(t, "client of uid 65534")
}

func TestClientRefusesServerOfOtherUser(t *testing.T) {
	// nobody serves a store of its own; root's store directory holds a
	// socket that leads there (as if nobody had planted it).
	theirs := filepath.Join(publicDir(t), "store")
	if err := os.Mkdir(theirs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(theirs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	helper := asNobody(t, "serve "+theirs)
	stdin, _ := helper.StdinPipe()
	stdout, _ := helper.StdoutPipe()
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); helper.Wait() }()
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("helper: %q", line)
	}
	// Root does not adopt nobody's store directory...
	if _, err := OpenRepo(theirs); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("root opening nobody's store: %v, want ErrNotOwner", err)
	}
	// ...nor talks to nobody's server from a directory of its own.
	mine := t.TempDir()
	if err := os.Symlink(filepath.Join(theirs, SocketName), filepath.Join(mine, SocketName)); err != nil {
		t.Fatal(err)
	}
	_, err := Dial(mine)
	if !errors.Is(err, ErrPeer) || !strings.Contains(err.Error(), "uid 65534") {
		t.Fatalf("root dialing nobody's server: %v, want ErrPeer naming uid 65534", err)
	}
}

func TestOpenRefusesOtherUsersDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	dir := t.TempDir()
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir); !errors.Is(err, ErrNotOwner) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open of nobody's empty directory: %v, want ErrNotOwner", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		t.Fatalf("refused Open left %d files behind", len(ents))
	}
}

func TestStoreFilesPrivate(t *testing.T) {
	s := openT(t)
	dump(t, s, "a", []fakeVMA{{1, 0, 3}})
	dir := s.Dir()
	s.Close()
	os.Chmod(filepath.Join(dir, "MANIFEST"), 0o644)
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fi, _ := e.Info()
		if fi.Mode().IsRegular() && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v", e.Name(), fi.Mode())
		}
	}
}
