package dedup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ckptfs/ckptfs/image"
	"golang.org/x/sys/unix"
)

// openRepoWait is how long OpenRepo waits for a busy store.
var openRepoWait = 3 * time.Second

// SocketName is the unix socket, inside the store directory, on which the
// owner of a store serves it.
const SocketName = "ckptfs.sock"

// PutArgs is the wire form of PutPages (net/rpc wants exported types).
type PutArgs struct {
	Hashes []image.Hash
	Pages  [][]byte
}

// CommitReply is the wire reply of Commit.
type CommitReply struct {
	ID   string
	Time time.Time
}

// service is one connection's view of the store.
type service struct {
	s      *Store
	notify func()

	mu       sync.Mutex
	inflight bool // this connection sent pages it has not committed yet
}

func (v *service) begin() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.inflight {
		v.inflight = true
		v.s.inflight.Add(1)
	}
}

func (v *service) end() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.inflight {
		v.inflight = false
		v.s.inflight.Add(-1)
	}
}

func (v *service) ReadPage(h image.Hash, page *[]byte) error {
	*page = make([]byte, image.PageSize)
	return v.s.ReadPage(h, *page)
}

func (v *service) Missing(hashes []image.Hash, miss *[]bool) (err error) {
	v.begin()
	*miss, err = v.s.Missing(hashes)
	return err
}

func (v *service) PutPages(a PutArgs, added *int64) (err error) {
	v.begin()
	*added, err = v.s.PutPages(a.Hashes, a.Pages)
	return err
}

// PutTables stores page-table values ahead of a commit (tables.go): like
// pages, they make the session one gc must wait for.
func (v *service) PutTables(values [][]byte, _ *int) error {
	v.begin()
	return v.s.PutTables(values)
}

func (v *service) Commit(w *WireCheckpoint, r *CommitReply) error {
	c, err := fromWire(w)
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if err := v.s.Commit(c); err != nil {
		return err
	}
	v.end()
	*r = CommitReply{ID: c.ID, Time: c.Time}
	v.notify()
	return nil
}

func (v *service) List(_ int, list *[]Summary) (err error) {
	*list, err = v.s.List()
	return err
}

func (v *service) Load(id string, w *WireCheckpoint) error {
	c, err := v.s.Load(id)
	if err != nil {
		return err
	}
	x, err := toWire(c)
	if err != nil {
		return fmt.Errorf("load %s: %w", id, err)
	}
	*w = *x
	return nil
}

func (v *service) Remove(ids []string, _ *int) error {
	err := v.s.Remove(ids...)
	v.notify() // some may have been removed before an error
	return err
}

func (v *service) GC(_ int, r *GCResult) (err error) {
	*r, err = v.s.GC()
	if err == nil {
		v.notify()
	}
	return err
}

func (v *service) Verify(_ int, problems *[]string) (err error) {
	*problems, err = v.s.Verify()
	return err
}

func (v *service) Stats(_ int, st *StoreStats) (err error) {
	*st, err = v.s.Stats()
	return err
}

// Serve serves the store to other processes on <dir>/ckptfs.sock (mode
// 0600) until ctx is done. notify (may be nil) is called after every
// successful Commit, Remove and GC of a client. Only processes of the
// store's owner and root are served, and only if they speak this
// ProtocolVersion (see handshake.go); a refused connection is logged with
// the function set by SetLogf (default: standard error).
func (s *Store) Serve(ctx context.Context, notify func()) error {
	if notify == nil {
		notify = func() {}
	}
	sock := filepath.Join(s.dir, SocketName)
	// We own the store, so a socket left there is stale.
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("serve: remove stale socket: %w", err)
	}
	var ln *net.UnixListener
	err := withSocketAddr(s.dir, func(addr string) (err error) {
		ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: addr, Net: "unix"})
		return err
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(sock, 0600); err != nil {
		ln.Close()
		return fmt.Errorf("serve: %w", err)
	}

	var (
		mu    sync.Mutex
		conns = make(map[net.Conn]bool)
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			ln.Close()
			wg.Wait()
			return fmt.Errorf("serve: accept: %w", err)
		}
		mu.Lock()
		conns[conn] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, conn)
				mu.Unlock()
			}()
			uc, ok := conn.(*net.UnixConn)
			if !ok {
				conn.Close()
				return
			}
			if err := serverHandshake(uc); err != nil {
				s.logf("store %s: refused a connection: %v", s.dir, err)
				conn.Close()
				return
			}
			v := &service{s: s, notify: notify}
			srv := rpc.NewServer()
			if err := srv.RegisterName("Store", v); err != nil {
				conn.Close()
				return
			}
			srv.ServeConn(conn) // returns when the client hangs up
			v.end()
		}()
	}
	wg.Wait()
	return nil
}

// SetLogf sets where Serve reports refused connections (nil: standard
// error).
func (s *Store) SetLogf(f func(format string, args ...any)) { s.logfn.Store(&f) }

func (s *Store) logf(format string, args ...any) {
	if f := s.logfn.Load(); f != nil && *f != nil {
		(*f)(format, args...)
		return
	}
	fmt.Fprintf(os.Stderr, "ckptfs: "+format+"\n", args...)
}

// withSocketAddr calls f with an address for dir/ckptfs.sock that fits in
// a sockaddr_un (108 bytes): the path itself if short enough, otherwise
// the same file reached through /proc/self/fd of an O_PATH descriptor of
// dir.
func withSocketAddr(dir string, f func(addr string) error) error {
	sock := filepath.Join(dir, SocketName)
	if len(sock) < 100 {
		return f(sock)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	defer unix.Close(fd)
	return f(fmt.Sprintf("/proc/self/fd/%d/%s", fd, SocketName))
}

// Client is a Repo served by the process that owns the store.
type Client struct {
	dir string
	c   *rpc.Client
}

// Dial connects to the process serving the store in dir. It refuses a
// store directory of another user and a server that runs as another user
// (other than root) or speaks another ProtocolVersion.
func Dial(dir string) (*Client, error) {
	if err := checkOwner(dir); err != nil {
		return nil, err
	}
	var conn *net.UnixConn
	err := withSocketAddr(dir, func(addr string) (err error) {
		conn, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: addr, Net: "unix"})
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := clientHandshake(conn, dir); err != nil {
		conn.Close()
		return nil, err
	}
	return &Client{dir: dir, c: rpc.NewClient(conn)}, nil
}

// OpenRepo opens the store in dir locally, or, if another process owns it,
// connects to that process. If the owner does not serve the store (a dump
// or another command holds it), it waits a few seconds for it to finish.
func OpenRepo(dir string) (Repo, error) {
	deadline := time.Now().Add(openRepoWait)
	for {
		r, err := tryRepo(dir)
		if !errors.Is(err, errBusy) {
			return r, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("store %s is locked by %s and nobody serves it: %w", dir, describeOwner(dir), ErrLocked)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// errBusy is tryRepo's "locked by a process that does not serve it: try
// again".
var errBusy = errors.New("store busy")

// tryRepo opens the store in dir locally or connects to the process that
// serves it, once. A server that is refused (another uid, another protocol,
// not the store's owner) is an error, not a reason to wait.
func tryRepo(dir string) (Repo, error) {
	s, err := Open(dir)
	if err == nil {
		return s, nil
	}
	if !errors.Is(err, ErrLocked) {
		return nil, err
	}
	c, derr := Dial(dir)
	if derr == nil {
		return c, nil
	}
	if errors.Is(derr, ErrPeer) || errors.Is(derr, ErrProtocol) || errors.Is(derr, ErrNotOwner) {
		return nil, derr
	}
	return nil, errBusy
}

func (c *Client) call(method string, args, reply any) error {
	if err := c.c.Call("Store."+method, args, reply); err != nil {
		if errors.Is(err, rpc.ErrShutdown) {
			return fmt.Errorf("store %s: server went away: %w", c.dir, err)
		}
		return remoteError(err.Error()) // remoteerr.go
	}
	return nil
}

// ReadPage reads page h from the server, which checks its hash.
func (c *Client) ReadPage(h image.Hash, buf []byte) error {
	var page []byte
	if err := c.call("ReadPage", h, &page); err != nil {
		return err
	}
	if copy(buf, page) != image.PageSize {
		return fmt.Errorf("read page %s: short page from server", h)
	}
	return nil
}

func (c *Client) Missing(hashes []image.Hash) ([]bool, error) {
	var miss []bool
	err := c.call("Missing", hashes, &miss)
	if err == nil && len(miss) != len(hashes) {
		err = fmt.Errorf("missing: %d answers for %d hashes", len(miss), len(hashes))
	}
	return miss, err
}

func (c *Client) PutPages(hashes []image.Hash, pages [][]byte) (int64, error) {
	var added int64
	err := c.call("PutPages", PutArgs{hashes, pages}, &added)
	return added, err
}

func (c *Client) Commit(cp *image.Checkpoint) error {
	w, err := toWire(cp)
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	var r CommitReply
	if err := c.call("Commit", w, &r); err != nil {
		return err
	}
	cp.ID, cp.Time = r.ID, r.Time
	return nil
}

func (c *Client) List() ([]Summary, error) {
	var list []Summary
	err := c.call("List", 0, &list)
	return list, err
}

func (c *Client) Load(id string) (*image.Checkpoint, error) {
	var w WireCheckpoint
	if err := c.call("Load", id, &w); err != nil {
		return nil, err
	}
	cp, err := fromWire(&w)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", id, err)
	}
	return cp, nil
}

func (c *Client) Remove(ids ...string) error { return c.call("Remove", ids, new(int)) }

func (c *Client) GC() (GCResult, error) {
	var r GCResult
	err := c.call("GC", 0, &r)
	return r, err
}

func (c *Client) Verify() ([]string, error) {
	var p []string
	err := c.call("Verify", 0, &p)
	return p, err
}

func (c *Client) Stats() (StoreStats, error) {
	var st StoreStats
	err := c.call("Stats", 0, &st)
	return st, err
}

// Close hangs up; the server drops any uncommitted state of this client.
func (c *Client) Close() error { return c.c.Close() }

var (
	_ Repo = (*Store)(nil)
	_ Repo = (*Client)(nil)
)
