package dumper

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// ptyKind is a pty master (/dev/ptmx): the pair is an object (pty-<index>)
// with the slave's termios, window size, owner, the master's packet mode,
// the lock and the bytes queued in both directions; the slave fds of the
// checkpoint refer to it too (chrKind.collect, ptySlave), whatever order
// they are collected in.
type ptyKind struct{ noOps }

func (ptyKind) fdKind() string { return image.FDPty }
func (ptyKind) classifies(link string, mode uint32) bool {
	return isType(mode, unix.S_IFCHR) && isPtmx(link)
}
func (ptyKind) owns(*image.FD) bool { return true }

func isPtmx(path string) bool { return path == "/dev/ptmx" || path == "/dev/pts/ptmx" }

// collect records the pair once, from a duplicate of the master
// (pidfd_getfd: opening /proc/<pid>/fd/<n> of /dev/ptmx would make a new
// pair).
func (ptyKind) collect(cc *collection, t *image.Task, f *image.FD) error {
	n, err := image.PtyMasterIndex(f, false)
	if err != nil {
		return err
	}
	f.Object = image.PtyID(n)
	if cc.c.Object(f.Object) != nil {
		return nil
	}
	pidfd, err := unix.PidfdOpen(t.PID, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pidfd)
	master, err := unix.PidfdGetfd(pidfd, f.Num, 0)
	if err != nil {
		return fmt.Errorf("pidfd_getfd: %w", err)
	}
	defer unix.Close(master)
	if err := image.PtyRefusal(cc.c, map[int]bool{n: false}); err != nil { // before readPty touches it
		return err
	}
	o, err := readPty(master, n)
	if err != nil {
		return fmt.Errorf("pty /dev/pts/%d: %w", n, err)
	}
	if p, err := image.ParsePty(o, false); err != nil {
		return err
	} else if err := image.PtyRefusal(cc.c, map[int]bool{n: p.Locked}); err != nil {
		return err // the rules restore applies (restorer checkPtys); also before seizing: refuse_tree.go
	}
	cc.c.Objects = append(cc.c.Objects, o)
	return nil
}

// ptySlave gives slave fd f of task t the object of its pair if the
// pair's master is in the checkpoint (a master fd of that index is among
// the tasks' fds). An fd on /dev/tty is one on the task's controlling
// terminal: it is restored as a slave fd of that pair.
func ptySlave(cc *collection, t *image.Task, f *image.FD) {
	n := -1
	if idx, ok := strings.CutPrefix(f.Path, "/dev/pts/"); ok {
		if i, err := strconv.Atoi(idx); err == nil {
			n = i
		}
	} else if major := unix.Major(t.TTYNr); f.Path == "/dev/tty" && major >= 136 && major < 144 {
		n = int((major-136)*256 + unix.Minor(t.TTYNr))
	}
	if n < 0 {
		return
	}
	for _, t := range cc.c.Tasks {
		for _, g := range t.FDs {
			if g.Kind != image.FDPty {
				continue
			}
			if m, err := image.PtyMasterIndex(g, false); err == nil && m == n {
				f.Object = image.PtyID(n)
				return
			}
		}
	}
}

// readPty reads the state of the pair whose master is fd master, index n.
//
// The bytes queued for the master to read (what the slave's programs
// wrote, not read yet by tmux, say) are read from the master and written
// back through the slave with output processing off (OPOST cleared for
// the write, the termios put back after): the kernel's queue holds the
// same bytes in the same order afterwards, so a program the dump does not
// kill reads them as it would have. The bytes queued for the slave to read
// are read the same way in non-canonical mode (raw bytes, written back
// through the master with input processing and echo off). In canonical
// mode the kernel shows only complete lines and reading them would put a
// pending partial line first: a checkpoint with unread input lines on a
// canonical slave is refused (retry once the program read them), and a
// partial line being typed is not saved.
func readPty(master, n int) (*image.Object, error) {
	tio, err := unix.IoctlGetTermios(master, unix.TCGETS) // the slave's
	if err != nil {
		return nil, fmt.Errorf("TCGETS: %w", err)
	}
	ws, err := unix.IoctlGetWinsize(master, unix.TIOCGWINSZ)
	if err != nil {
		return nil, fmt.Errorf("TIOCGWINSZ: %w", err)
	}
	pkt, err := unix.IoctlGetInt(master, unix.TIOCGPKT)
	if err != nil {
		return nil, fmt.Errorf("TIOCGPKT: %w", err)
	}
	locked, err := unix.IoctlGetInt(master, unix.TIOCGPTLCK)
	if err != nil {
		return nil, fmt.Errorf("TIOCGPTLCK: %w", err)
	}
	p := &image.Pty{
		Index: n, Iflag: tio.Iflag, Oflag: tio.Oflag, Cflag: tio.Cflag, Lflag: tio.Lflag, Line: tio.Line,
		CC: append([]byte{}, tio.Cc[:image.PtyCCs]...), Ispeed: tio.Ispeed, Ospeed: tio.Ospeed,
		Rows: ws.Row, Cols: ws.Col, Xpixel: ws.Xpixel, Ypixel: ws.Ypixel,
		Packet: pkt != 0, Locked: locked != 0,
	}
	slavePath := "/dev/pts/" + strconv.Itoa(n)
	var st unix.Stat_t
	if err := unix.Stat(slavePath, &st); err != nil {
		return nil, fmt.Errorf("stat: %w", err)
	}
	p.UID, p.GID, p.Mode = st.Uid, st.Gid, st.Mode&0o7777
	if p.Locked {
		// Nothing can have opened the slave: nothing is queued.
		return p.Object(nil, nil), nil
	}
	slave, err := unix.Open(slavePath, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the slave: %w", err)
	}
	defer unix.Close(slave)
	var fst unix.Stat_t
	if err := unix.Fstat(slave, &fst); err != nil || fst.Rdev != st.Rdev {
		return nil, fmt.Errorf("%s is not the slave of this master", slavePath)
	}
	if pkt != 0 {
		// Packet mode off meanwhile: a read would start with a status
		// byte, and the termios changes below would queue a status
		// (TIOCPKT_NOSTOP/DOSTOP) for the program. Turning it on again
		// clears the status; one pending at dump time is not kept.
		if err := unix.IoctlSetPointerInt(master, unix.TIOCPKT, 0); err != nil {
			return nil, fmt.Errorf("packet mode off: %w", err)
		}
		defer unix.IoctlSetPointerInt(master, unix.TIOCPKT, 1)
	}
	toMaster, err := requeue(master, slave, tio, func(raw *unix.Termios) { raw.Oflag &^= unix.OPOST })
	if err != nil {
		return nil, fmt.Errorf("bytes queued for the master: %w", err)
	}
	var toSlave []byte
	if tio.Lflag&unix.ICANON == 0 {
		toSlave, err = requeue(slave, master, tio, func(raw *unix.Termios) {
			raw.Iflag = 0
			raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ISIG | unix.IEXTEN
		})
		if err != nil {
			return nil, fmt.Errorf("bytes queued for the slave: %w", err)
		}
	} else if q, err := unix.IoctlGetInt(slave, unix.TIOCINQ); err == nil && q > 0 {
		return nil, fmt.Errorf("%s has %d bytes of unread input lines in canonical mode: "+
			"cannot save them without changing them (dump again once its program has read them)", slavePath, q)
	}
	return p.Object(toSlave, toMaster), nil
}

// requeue reads every byte queued on from (non-blocking) and writes it
// back through to with the slave's termios changed by raw for the write;
// the recorded termios tio is set again after.
func requeue(from, to int, tio *unix.Termios, raw func(*unix.Termios)) ([]byte, error) {
	q, err := unix.IoctlGetInt(from, unix.TIOCINQ)
	if err != nil {
		return nil, fmt.Errorf("TIOCINQ: %w", err)
	}
	if q == 0 {
		return nil, nil
	}
	// Nothing is read unless it can be written back at once: a slave
	// whose output is stopped (^S) takes no writes, and the bytes would
	// be lost to the program.
	pfd := []unix.PollFd{{Fd: int32(to), Events: unix.POLLOUT}}
	if n, err := unix.Poll(pfd, 0); err != nil || n == 0 || pfd[0].Revents&unix.POLLOUT == 0 {
		return nil, fmt.Errorf("%d bytes queued but the other side takes no writes (output stopped?): cannot save them without losing them; dump again later", q)
	}
	// from may be the program's own blocking open file description (the
	// master, taken with pidfd_getfd): read only while poll says it is
	// readable, so a miscount never blocks the dump.
	var data []byte
	buf := make([]byte, 4096)
	for {
		pfd := []unix.PollFd{{Fd: int32(from), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, 0); errors.Is(err, unix.EINTR) {
			continue
		} else if err != nil {
			return data, fmt.Errorf("poll: %w", err)
		} else if n == 0 || pfd[0].Revents&unix.POLLIN == 0 {
			break
		}
		k, err := unix.Read(from, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EIO) || k <= 0 {
			break
		}
		if err != nil {
			return data, fmt.Errorf("read: %w", err)
		}
		data = append(data, buf[:k]...)
	}
	if len(data) == 0 {
		return nil, nil
	}
	mod := *tio
	raw(&mod)
	if err := unix.IoctlSetTermios(to, unix.TCSETS, &mod); err != nil {
		return data, fmt.Errorf("TCSETS: %w", err)
	}
	defer unix.IoctlSetTermios(to, unix.TCSETS, tio)
	for rest := data; len(rest) > 0; {
		k, err := unix.Write(to, rest)
		if err != nil {
			return data, fmt.Errorf("write back %d bytes: %w", len(rest), err)
		}
		rest = rest[k:]
	}
	return data, nil
}
