package dumper

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// A tracker is a small process of ours that holds the userfaultfds that
// write-protect a tracked tree (the protection lasts as long as a copy of
// each fd is open) and says, to the next dump, what it holds: which tree,
// which checkpoint protection was armed after, and for each process its
// pid and start time. It is `ckptfs track-holder`, in a session of its
// own, listening on DIR/<root pid>.sock (DIR is STORE/track). It needs no
// polling: async write-protect sends no fault message. It exits when
// every tracked process is gone, or once a dump has taken its fds over.
//
// Protocol: one request line. "take": the tracker answers with its state
// (4-byte length + JSON), then its fds (SCM_RIGHTS, at most
// maxFDsPerMessage a message, in the order of State.Tasks), waits for
// "ok", and exits; until that "ok" it keeps holding them, so a dump that
// dies mid-takeover loses nothing. "state": the state alone.

// TrackerState is what a tracker holds, as the next dump reads it.
type TrackerState struct {
	Root       int           `json:"root"`
	Checkpoint string        `json:"checkpoint"` // armed after this checkpoint
	Tasks      []TrackedTask `json:"tasks"`      // one userfaultfd each, in this order
}

// TrackedTask names a tracked process: a pid and its start time (clock
// ticks after boot, /proc/<pid>/stat field 22), so a reused pid is not
// taken for the process that was tracked.
type TrackedTask struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

const maxFDsPerMessage = 250 // below SCM_MAX_FD (253)

// TrackerSocket is the socket of the tracker of the tree rooted at root.
func TrackerSocket(dir string, root int) string {
	return filepath.Join(dir, strconv.Itoa(root)+".sock")
}

// RunTracker is the tracker process: it holds fds (the userfaultfds of
// st.Tasks, in order), serves sock, and returns once they were taken
// over or every tracked process is gone. ready is written one line once
// the socket listens, then closed.
func RunTracker(sock string, st TrackerState, fds []int, ready io.WriteCloser) error {
	if len(fds) != len(st.Tasks) {
		return fmt.Errorf("tracker: %d fds for %d tasks", len(fds), len(st.Tasks))
	}
	if fi, err := os.Lstat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(sock) // a tracker that died left it
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return fmt.Errorf("tracker: listen: %w", err)
	}
	l.SetUnlinkOnClose(true)
	defer l.Close()
	h := &holder{st: st, fds: fds, done: make(chan struct{})}
	go h.watchExits()
	go func() {
		<-h.done
		l.Close()
	}()
	fmt.Fprintln(ready, "ready")
	ready.Close()
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			select {
			case <-h.done:
				return nil
			default:
				return fmt.Errorf("tracker: accept: %w", err)
			}
		}
		h.serve(c)
	}
}

// holder is the tracker's state: the live tasks and their fds.
type holder struct {
	mu   sync.Mutex
	st   TrackerState
	fds  []int
	done chan struct{}
	once sync.Once
}

func (h *holder) finish() { h.once.Do(func() { close(h.done) }) }

// watchExits closes the fd of each tracked process that exits and ends
// the tracker when none is left.
func (h *holder) watchExits() {
	h.mu.Lock()
	pidfds := make([]int, len(h.st.Tasks))
	for i, t := range h.st.Tasks {
		pidfds[i] = -1
		if fd, err := unix.PidfdOpen(t.PID, 0); err == nil {
			pidfds[i] = fd
		}
	}
	h.mu.Unlock()
	for {
		h.mu.Lock()
		var pfds []unix.PollFd
		var which []int
		for i, fd := range pidfds {
			if fd >= 0 {
				pfds = append(pfds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
				which = append(which, i)
			} else if h.fds[i] >= 0 {
				unix.Close(h.fds[i]) // gone before we looked
				h.fds[i] = -1
			}
		}
		live := len(pfds)
		h.mu.Unlock()
		if live == 0 {
			h.finish()
			return
		}
		n, err := unix.Poll(pfds, 1000)
		if err != nil && err != unix.EINTR {
			time.Sleep(time.Second)
			continue
		}
		if n <= 0 {
			select {
			case <-h.done:
				return
			default:
				continue
			}
		}
		h.mu.Lock()
		for k, p := range pfds {
			if p.Revents != 0 {
				i := which[k]
				unix.Close(pidfds[i])
				pidfds[i] = -1
				if h.fds[i] >= 0 {
					unix.Close(h.fds[i])
					h.fds[i] = -1
				}
			}
		}
		h.mu.Unlock()
	}
}

// live returns the state and fds of the tasks still there.
func (h *holder) live() (TrackerState, []int) {
	st := TrackerState{Root: h.st.Root, Checkpoint: h.st.Checkpoint}
	var fds []int
	for i, t := range h.st.Tasks {
		if h.fds[i] >= 0 {
			st.Tasks = append(st.Tasks, t)
			fds = append(fds, h.fds[i])
		}
	}
	return st, fds
}

func (h *holder) serve(c *net.UnixConn) {
	defer c.Close()
	if !peerAllowed(c) {
		return
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	st, fds := h.live()
	body, _ := json.Marshal(st)
	msg := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
	if _, err := c.Write(append(msg, body...)); err != nil {
		return
	}
	if line != "take\n" {
		return
	}
	for len(fds) > 0 {
		n := min(len(fds), maxFDsPerMessage)
		if _, _, err := c.WriteMsgUnix([]byte{1}, unix.UnixRights(fds[:n]...), nil); err != nil {
			return
		}
		fds = fds[n:]
	}
	ok := make([]byte, 3)
	if _, err := io.ReadFull(c, ok); err != nil || string(ok) != "ok\n" {
		return // the dump went away: keep holding
	}
	for i, fd := range h.fds {
		if fd >= 0 {
			unix.Close(fd)
			h.fds[i] = -1
		}
	}
	h.finish()
}

// peerAllowed lets in only this user and root.
func peerAllowed(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	return cerr == nil && (cred.Uid == 0 || int(cred.Uid) == os.Getuid())
}

// errNoTracker says no tracker holds the tree (none was started, or it
// exited, or it died).
var errNoTracker = errors.New("no tracker holds this tree")

// askTracker connects to the tracker at sock. take: its fds are taken over
// (returned in the order of the state's tasks) and the tracker exits.
func askTracker(sock string, take bool) (TrackerState, []int, error) {
	var st TrackerState
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ECONNREFUSED) {
			if errors.Is(err, unix.ECONNREFUSED) {
				os.Remove(sock) // left by a tracker that died
			}
			return st, nil, errNoTracker
		}
		return st, nil, fmt.Errorf("connect to tracker: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	req := "state\n"
	if take {
		req = "take\n"
	}
	if _, err := c.Write([]byte(req)); err != nil {
		return st, nil, fmt.Errorf("tracker: %w", err)
	}
	if err := readStateMessage(c, &st); err != nil {
		return st, nil, fmt.Errorf("tracker state: %w", err)
	}
	if !take {
		return st, nil, nil
	}
	fds, err := readTaskFDs(c, len(st.Tasks))
	if err != nil {
		return st, nil, fmt.Errorf("tracker fds: %w", err)
	}
	if _, err := c.Write([]byte("ok\n")); err != nil {
		closeFDs(fds)
		return st, nil, fmt.Errorf("tracker: %w", err)
	}
	return st, fds, nil
}

// trackerSocketDir checks that sock can be a socket's path and makes
// its directory.
func trackerSocketDir(sock string) error {
	if len(sock) >= len(unix.RawSockaddrUnix{}.Path) {
		return fmt.Errorf("tracker socket path too long (%d bytes): %s", len(sock), sock)
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return fmt.Errorf("tracker dir: %w", err)
	}
	return nil
}

// startTracker starts exe args... --socket sock as a tracker holding fds
// for st, in a session of its own, and waits until it listens.
func startTracker(exe string, args []string, sock string, st TrackerState, fds []int) error {
	if err := trackerSocketDir(sock); err != nil {
		return err
	}
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	stateFile, err := os.CreateTemp("", "ckptfs-track-*")
	if err != nil {
		return fmt.Errorf("tracker state: %w", err)
	}
	os.Remove(stateFile.Name())
	defer stateFile.Close()
	if _, err := stateFile.Write(body); err != nil {
		return fmt.Errorf("tracker state: %w", err)
	}
	if _, err := stateFile.Seek(0, io.SeekStart); err != nil {
		return err
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	// Copies for the child: fds stays the caller's.
	files := make([]*os.File, 0, len(fds))
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, fd := range fds {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
		if err != nil {
			return fmt.Errorf("tracker fds: %w", err)
		}
		files = append(files, os.NewFile(uintptr(dup), "userfaultfd"))
	}
	cmd := exec.Command(exe, append(append([]string{}, args...), "--socket", sock, "--fds", strconv.Itoa(len(fds)))...)
	cmd.Args[0] = "ckptfs"
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout = stateFile, readyW
	// Stderr stays /dev/null: the tracker outlives the dump and must not
	// hold the caller's terminal or pipe open.
	cmd.ExtraFiles = files // fds 3...
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("start tracker: %w", err)
	}
	line, _ := bufio.NewReader(readyR).ReadString('\n')
	if line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		return errors.New("tracker did not start")
	}
	// Not waited for: it outlives this process and is reaped by init.
	return cmd.Process.Release()
}

// A tracker can be started ahead (prestartTracker), while the dump
// copies and commits, so that the dump does not wait for a process to
// start after its commit. It is `track-holder --socket PATH --handoff`:
// it waits on a socket pair (fd 3) for its state and fds (handoff), and
// exits if the pair closes first: the dump failed, or died.

// A pre-started tracker is handed its state first (4-byte length +
// JSON), then its fds (SCM_RIGHTS, in the order of State.Tasks); it
// answers "ready" once it listens.

// pendingTracker is a tracker started ahead, not handed anything yet.
type pendingTracker struct {
	done chan struct{} // the start is over
	conn *net.UnixConn // our end of the pair
	proc *os.Process
	err  error
}

// prestartTracker starts exe args... --socket sock --handoff in the
// background.
func prestartTracker(exe string, args []string, sock string) *pendingTracker {
	p := &pendingTracker{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.err = p.start(exe, args, sock)
	}()
	return p
}

func (p *pendingTracker) start(exe string, args []string, sock string) error {
	if err := trackerSocketDir(sock); err != nil {
		return err
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tracker handoff: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "tracker handoff"), os.NewFile(uintptr(pair[1]), "tracker handoff")
	defer theirs.Close()
	fc, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		theirs.Close()
		return fmt.Errorf("tracker handoff: %w", err)
	}
	cmd := exec.Command(exe, append(append([]string{}, args...), "--socket", sock, "--handoff")...)
	cmd.Args[0] = "ckptfs"
	cmd.Dir = "/"
	// Stdin, stdout, stderr /dev/null: the tracker outlives the dump and
	// must not hold the caller's terminal or pipe open.
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fc.Close()
		return fmt.Errorf("start tracker: %w", err)
	}
	uc, ok := fc.(*net.UnixConn)
	if !ok {
		fc.Close()
		cmd.Process.Kill()
		cmd.Process.Release()
		return errors.New("tracker handoff: not a unix socket")
	}
	p.conn, p.proc = uc, cmd.Process
	return nil
}

// hand gives the tracker its state and fds and waits until it listens.
// However it ends, the tracker is no longer ours to wait for.
func (p *pendingTracker) hand(st TrackerState, fds []int) error {
	<-p.done
	if p.err != nil {
		return p.err
	}
	defer p.release()
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	c := p.conn
	c.SetDeadline(time.Now().Add(30 * time.Second))
	msg := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
	if _, err := c.Write(append(msg, body...)); err != nil {
		return fmt.Errorf("tracker handoff: %w", err)
	}
	for len(fds) > 0 {
		n := min(len(fds), maxFDsPerMessage)
		if _, _, err := c.WriteMsgUnix([]byte{1}, unix.UnixRights(fds[:n]...), nil); err != nil {
			return fmt.Errorf("tracker handoff: %w", err)
		}
		fds = fds[n:]
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	if line != "ready\n" {
		p.proc.Kill() // it holds copies of the fds it may have got
		return errors.New("tracker did not start")
	}
	return nil
}

// release closes our end (a tracker not handed its state then exits)
// and lets the process go: it outlives this one and is reaped by init.
func (p *pendingTracker) release() {
	<-p.done
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
	if p.proc != nil {
		p.proc.Release()
		p.proc = nil
	}
}

// ReceiveHandoff is a pre-started tracker's side of hand: it reads its
// state and fds from conn (fd 3 of track-holder --handoff). conn stays
// open: RunTracker says "ready" on it.
func ReceiveHandoff(conn *os.File) (st TrackerState, fds []int, err error) {
	fc, err := net.FileConn(conn)
	if err != nil {
		return st, nil, fmt.Errorf("tracker handoff: %w", err)
	}
	defer fc.Close()
	c, ok := fc.(*net.UnixConn)
	if !ok {
		return st, nil, errors.New("tracker handoff: fd 3 is not a unix socket")
	}
	if err := readStateMessage(c, &st); err != nil {
		return st, nil, fmt.Errorf("tracker handoff: %w", err) // EOF: the dump went away
	}
	if fds, err = readTaskFDs(c, len(st.Tasks)); err != nil {
		return st, nil, fmt.Errorf("tracker handoff fds: %w", err)
	}
	return st, fds, nil
}

// readFDMessage reads one message over c and returns the fds it passed
// (SCM_RIGHTS), close-on-exec; with an error, those received before it,
// for the caller to close.
func readFDMessage(c *net.UnixConn, oob []byte) ([]int, error) {
	_, oobn, _, _, err := c.ReadMsgUnix(make([]byte, 1), oob)
	if err != nil {
		return nil, err
	}
	if oobn == 0 {
		return nil, errors.New("message without fds")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			return fds, err
		}
		for _, fd := range got {
			unix.CloseOnExec(fd)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

// readStateMessage reads a TrackerState sent over c: its JSON's length
// (4 bytes, little-endian), then the JSON.
func readStateMessage(c net.Conn, st *TrackerState) error {
	var n [4]byte
	if _, err := io.ReadFull(c, n[:]); err != nil {
		return err
	}
	size := binary.LittleEndian.Uint32(n[:])
	if size > 64<<20 {
		return fmt.Errorf("%d bytes of state", size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(c, body); err != nil {
		return err
	}
	return json.Unmarshal(body, st)
}

// readTaskFDs reads the n uffds of a state's tasks, sent over c after
// it; with an error, none of them is left open.
func readTaskFDs(c *net.UnixConn, n int) ([]int, error) {
	var fds []int
	oob := make([]byte, unix.CmsgSpace(4*maxFDsPerMessage))
	for len(fds) < n {
		got, err := readFDMessage(c, oob)
		fds = append(fds, got...)
		if err != nil {
			closeFDs(fds)
			return nil, err
		}
	}
	if len(fds) != n {
		closeFDs(fds)
		return nil, fmt.Errorf("%d fds for %d tasks", len(fds), n)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
