package restorer

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/uffd"
)

// Lazy restore (Options.Lazy): the anonymous private memory of every task
// is not written before the task runs; it is registered with a
// userfaultfd created in the task, and that fd is handed to the page
// server (lazyserve.go), which fills it while the program runs. The
// task's own copy of the fd is closed before it runs.

// lazyServed says whether vma v of a lazy restore is filled by the page
// server: private anonymous memory (heap, stack, anonymous), which
// userfaultfd registers for missing pages and where a page never filled
// reads zero, as it did at dump time.
func lazyServed(v *image.VMA) bool {
	return verifiedVMA(v) && !v.Shared() && !mapsFile(v) && zeroFillOK(v)
}

// lazyClient is the restorer's end of the page server.
type lazyClient struct {
	sock int // -1 once closed
	pid  int
	log  string
}

// startLazyServer starts the page server in a session of its own, its
// output going to logPath, and connects to it.
func startLazyServer(argv []string, logPath string, since time.Time) (*lazyClient, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lazy page server: socketpair: %w", err)
	}
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, lazyMsgMax); err != nil {
		unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, lazyMsgMax)
	}
	theirs := os.NewFile(uintptr(fds[1]), "lazy-ctl")
	defer theirs.Close()
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("lazy page server log: %w", err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		unix.Close(fds[0])
		return nil, err
	}
	defer devnull.Close()
	cmd := exec.Command(argv[0], append(slices.Clone(argv[1:]), "--since", strconv.FormatInt(since.UnixNano(), 10))...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		unix.Close(fds[0])
		return nil, fmt.Errorf("start lazy page server %s: %w", argv[0], err)
	}
	c := &lazyClient{sock: fds[0], pid: cmd.Process.Pid, log: logPath}
	cmd.Process.Release() // it outlives us: init reaps it
	return c, nil
}

func (c *lazyClient) send(m lazyCtl, fd int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if err := unix.Sendmsg(c.sock, b, oob, nil, 0); err != nil {
		return fmt.Errorf("lazy page server (pid %d, log %s): %w", c.pid, c.log, err)
	}
	return nil
}

// done tells the server every task is released and lets it go on alone,
// or, with watch, keeps the connection for its fill reports (waitFill).
func (c *lazyClient) done(watch bool) error {
	err := c.send(lazyCtl{Done: true, Watch: watch}, -1)
	if !watch || err != nil {
		c.abort()
	}
	return err
}

// abort closes the connection (without Done: the server closes every
// userfaultfd and exits; the tasks are killed).
func (c *lazyClient) abort() {
	if c.sock >= 0 {
		unix.Close(c.sock)
		c.sock = -1
	}
}

// lazyHandoff registers the lazily served vmas of p (those of ranges that
// lazyServed selects) with a userfaultfd made in the task, hands it to
// the page server and closes it in the task. It returns the ranges left
// to write now.
func (p *target) lazyHandoff(c *lazyClient, ranges map[*image.VMA][][2]int64) (map[*image.VMA][][2]int64, error) {
	rest := map[*image.VMA][][2]int64{}
	var lazy []*image.VMA
	for _, v := range p.t.VMAs {
		if len(ranges[v]) == 0 {
			continue
		}
		if lazyServed(v) {
			lazy = append(lazy, v)
		} else {
			rest[v] = ranges[v]
		}
	}
	if len(lazy) == 0 {
		return ranges, nil
	}
	tfd, err := p.sys(p.pid, unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK)
	if err != nil {
		return nil, err
	}
	defer p.sys(p.pid, unix.SYS_CLOSE, tfd) // before the task runs
	addr, err := p.put(0, uffd.APIArg(uffd.LazyFeatures))
	if err != nil {
		return nil, err
	}
	if _, err := p.sys(p.pid, unix.SYS_IOCTL, tfd, uffd.IoctlAPI, addr); err != nil {
		return nil, fmt.Errorf("UFFDIO_API with fork, remap, remove, unmap events and poison (this kernel lacks one; restore without --lazy): %w", err)
	}
	task := &lazyTask{PID: p.pid}
	for _, v := range lazy {
		addr, err := p.put(0, uffd.RegisterArg(v.Start, v.Len(), uffd.RegisterMiss))
		if err != nil {
			return nil, err
		}
		if _, err := p.sys(p.pid, unix.SYS_IOCTL, tfd, uffd.IoctlReg, addr); err != nil {
			return nil, fmt.Errorf("vma %s: register with userfaultfd (restore without --lazy): %w", v.DirName(), err)
		}
		lv, err := lazyVMAOf(p.r.dir, p.t.PID, v)
		if err != nil {
			return nil, err
		}
		task.VMAs = append(task.VMAs, lv)
	}
	pidfd, err := unix.PidfdOpen(p.pid, 0)
	if err != nil {
		return nil, err
	}
	ufd, err := unix.PidfdGetfd(pidfd, int(tfd), 0)
	unix.Close(pidfd)
	if err != nil {
		return nil, fmt.Errorf("pidfd_getfd userfaultfd: %w", err)
	}
	defer unix.Close(ufd)
	if err := c.send(lazyCtl{Task: task}, ufd); err != nil {
		return nil, err
	}
	p.r.logf("task %d: %d vmas handed to the lazy page server", p.pid, len(lazy))
	return rest, nil
}

// defaultLazyLog is where the page server logs unless told otherwise.
func defaultLazyLog() string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("ckptfs-lazy-%d.log", os.Getpid()))
}

// lazyServerArgv is how the page server is started by default: this
// program's hidden lazy-serve command.
func lazyServerArgv() ([]string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("lazy page server: %w", err)
	}
	return []string{exe, "lazy-serve"}, nil
}

// startLazyAsync starts the page server of a lazy restore (none without
// opts.Lazy) in the background. The function it returns waits for it; a
// restore that does not hand it its tasks calls stopLazy, so that the
// server sees its socket close and exits.
func startLazyAsync(opts Options, start time.Time) func() (*lazyClient, error) {
	if !opts.Lazy {
		return func() (*lazyClient, error) { return nil, nil }
	}
	type result struct {
		c   *lazyClient
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := startLazy(opts, start)
		ch <- result{c, err}
	}()
	return sync.OnceValues(func() (*lazyClient, error) {
		res := <-ch
		return res.c, res.err
	})
}

// stopLazy closes the page server's socket if the restore did not.
func stopLazy(started func() (*lazyClient, error)) {
	if c, err := started(); err == nil && c != nil {
		c.abort()
	}
}

// startLazy starts the page server of a lazy restore that began at start.
func startLazy(opts Options, start time.Time) (*lazyClient, error) {
	argv := opts.LazyServer
	if len(argv) == 0 {
		var err error
		if argv, err = lazyServerArgv(); err != nil {
			return nil, err
		}
	}
	logPath := opts.LazyLog
	if logPath == "" {
		logPath = defaultLazyLog()
	}
	return startLazyServer(argv, logPath, start)
}
