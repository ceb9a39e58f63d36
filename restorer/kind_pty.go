package restorer

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// ptyKind is a pty pair (object pty-<index>): its master fds (kind pty)
// and the slave fds (/dev/pts/N, kind chr) of the checkpoint. The pair is
// made again with the same index: /dev/ptmx is opened until the kernel
// hands out that index (the lower free ones are held meanwhile, then
// closed), then the slave gets its owner and mode, window size, the bytes
// queued in both directions (written with the slave's processing off) and
// last its termios; the master its packet mode and lock. Master fds share
// the one master; slave fds are opened from the slave with their flags.
// The session leader whose controlling terminal the slave was gets it
// again before its children are made (takePtyCtty), and its foreground
// group once groups are joined (setPtyFg).
type ptyKind struct{ kindBase }

func (ptyKind) inherit(*image.Checkpoint, int, *image.FD, map[int]string) bool { return false }

// check: the index must be free on this machine (what the pair's state
// allows is image.PtyRefusal, checkPtys).
func (ptyKind) check(c *image.Checkpoint, _ *image.Task, f *image.FD) error {
	o := c.Object(f.Object)
	if o == nil || o.Kind != image.ObjPty {
		return fmt.Errorf("%s: object %s is not a pty", f.Path, f.Object)
	}
	p, err := image.ParsePty(o, false)
	if err != nil {
		return err
	}
	slave := ptsPath(p.Index)
	if _, err := os.Lstat(slave); err == nil {
		return fmt.Errorf("pty %s is in use on this machine: a pty pair is recreated with its index "+
			"(restore once the program using %s has closed it)", slave, slave)
	}
	return nil // a locked pair with slave fds: image.PtyRefusal (checkPtys)
}

// checkPtys applies the pty rules the dump applies too (image.PtyRefusal)
// to the pairs of checkpoint c.
func checkPtys(c *image.Checkpoint) error {
	pairs, err := ptyPairs(c)
	if err != nil {
		return err
	}
	return image.PtyRefusal(c, pairs)
}

// ptyPairs maps the index of every pty pair of c to whether it is locked.
func ptyPairs(c *image.Checkpoint) (map[int]bool, error) {
	pairs := map[int]bool{}
	for _, o := range c.Objects {
		if o.Kind != image.ObjPty {
			continue
		}
		p, err := image.ParsePty(o, false)
		if err != nil {
			return nil, err
		}
		pairs[p.Index] = p.Locked
	}
	return pairs, nil
}

func ptsPath(n int) string { return "/dev/pts/" + strconv.Itoa(n) }

func (ptyKind) open(fs *files, c *image.Checkpoint, t *image.Task, f *image.FD) (int, error) {
	o := c.Object(f.Object)
	master, slave, err := fs.ptyPair(c, o)
	if err != nil {
		return -1, err
	}
	if f.Kind == image.FDPty {
		if err := setStatusFlags(master, f.Flags); err != nil {
			return -1, fmt.Errorf("pty master flags: %w", err)
		}
		return master, nil
	}
	path := ptsPath(slaveIndex(o))
	if err := fs.creds.as(t, func() error { return unix.Faccessat2(unix.AT_FDCWD, path, accessMode(f.Flags), unix.AT_EACCESS) }); err != nil {
		return -1, fmt.Errorf("open %s as uid %d: %w", path, t.Creds.UID[3], err)
	}
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(slave), int(f.Flags&reopenMask)|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("reopen %s: %w", path, err)
	}
	return fs.keep(fd), nil
}

func slaveIndex(o *image.Object) int {
	p, _ := image.ParsePty(o, false) // checked by check
	return p.Index
}

func accessMode(flags uint32) uint32 {
	switch flags & unix.O_ACCMODE {
	case unix.O_WRONLY:
		return unix.W_OK
	case unix.O_RDWR:
		return unix.R_OK | unix.W_OK
	}
	return unix.R_OK
}

// ptyPair makes the pair of object o once and returns the restorer's
// master and slave fds.
func (fs *files) ptyPair(c *image.Checkpoint, o *image.Object) (int, int, error) {
	if m, ok := fs.objs[o.ID+"/m"]; ok {
		return m, fs.objs[o.ID+"/s"], nil
	}
	p, err := image.ParsePty(o, false)
	if err != nil {
		return -1, -1, err
	}
	ptmx := "/dev/ptmx"
	for _, f := range objectUsers(c, o.ID) {
		if f.Kind == image.FDPty && f.Path == "/dev/pts/ptmx" {
			ptmx = f.Path
		}
	}
	master, err := openPtyIndex(ptmx, p.Index)
	if err != nil {
		return -1, -1, err
	}
	fs.keep(master)
	slave, err := setupPty(master, p, o)
	if err != nil {
		return -1, -1, fmt.Errorf("pty %s: %w", ptsPath(p.Index), err)
	}
	fs.keep(slave)
	fs.objs[o.ID+"/m"], fs.objs[o.ID+"/s"] = master, slave
	return master, slave, nil
}

// openPtyIndex opens ptmx until the kernel gives the pair index n; the
// lower indexes it gives meanwhile (free ones) are closed again.
func openPtyIndex(ptmx string, n int) (int, error) {
	var spare []int
	defer func() {
		for _, fd := range spare {
			unix.Close(fd)
		}
	}()
	for range n + 1 {
		fd, err := unix.Open(ptmx, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", ptmx, err)
		}
		got, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("TIOCGPTN: %w", err)
		}
		if got == n {
			return fd, nil
		}
		spare = append(spare, fd)
		if got > n {
			break
		}
	}
	return -1, fmt.Errorf("pty %s is in use on this machine (taken since the preflight)", ptsPath(n))
}

// setupPty unlocks the new pair, opens its slave and gives it its
// recorded state, and returns the slave fd.
func setupPty(master int, p *image.Pty, o *image.Object) (int, error) {
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		return -1, fmt.Errorf("unlock: %w", err)
	}
	path := ptsPath(p.Index)
	slave, err := unix.Open(path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(slave)
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(slave, &st); err != nil || unix.Major(st.Rdev) < 136 || unix.Major(st.Rdev) >= 144 ||
		int((unix.Major(st.Rdev)-136)*256+unix.Minor(st.Rdev)) != p.Index {
		return -1, fmt.Errorf("%s is not the slave of the new master", path)
	}
	if err := unix.Fchown(slave, int(p.UID), int(p.GID)); err != nil {
		return -1, fmt.Errorf("chown: %w", err)
	}
	if err := unix.Fchmod(slave, p.Mode); err != nil {
		return -1, fmt.Errorf("chmod: %w", err)
	}
	ws := &unix.Winsize{Row: p.Rows, Col: p.Cols, Xpixel: p.Xpixel, Ypixel: p.Ypixel}
	if err := unix.IoctlSetWinsize(master, unix.TIOCSWINSZ, ws); err != nil {
		return -1, fmt.Errorf("window size: %w", err)
	}
	tio := &unix.Termios{Iflag: p.Iflag, Oflag: p.Oflag, Cflag: p.Cflag, Lflag: p.Lflag, Line: p.Line,
		Ispeed: p.Ispeed, Ospeed: p.Ospeed}
	copy(tio.Cc[:], p.CC)
	toSlave, toMaster := p.Queued(o)
	if len(toSlave)+len(toMaster) > 0 {
		// Raw for the queued bytes: no input or output processing, no
		// echo, no signals; the recorded termios comes after.
		raw := *tio
		raw.Iflag, raw.Oflag = 0, raw.Oflag&^unix.OPOST
		raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		if err := unix.IoctlSetTermios(slave, unix.TCSETS, &raw); err != nil {
			return -1, fmt.Errorf("termios: %w", err)
		}
		if err := writeAll(master, toSlave); err != nil {
			return -1, fmt.Errorf("%d bytes queued for the slave: %w", len(toSlave), err)
		}
		if err := writeAll(slave, toMaster); err != nil {
			return -1, fmt.Errorf("%d bytes queued for the master: %w", len(toMaster), err)
		}
	}
	if err := unix.IoctlSetTermios(slave, unix.TCSETS, tio); err != nil {
		return -1, fmt.Errorf("termios: %w", err)
	}
	if p.Packet {
		if err := unix.IoctlSetPointerInt(master, unix.TIOCPKT, 1); err != nil {
			return -1, fmt.Errorf("packet mode: %w", err)
		}
	}
	if p.Locked {
		if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 1); err != nil {
			return -1, fmt.Errorf("lock: %w", err)
		}
	}
	ok = true
	return slave, nil
}

// ctlPty returns the pty object that is task t's controlling terminal, if
// the pair is in the checkpoint.
func ctlPty(c *image.Checkpoint, t *image.Task) *image.Object {
	if t.TTYNr == 0 || unix.Major(t.TTYNr) < 136 || unix.Major(t.TTYNr) >= 144 {
		return nil
	}
	n := int((unix.Major(t.TTYNr)-136)*256 + unix.Minor(t.TTYNr))
	if o := c.Object(image.PtyID(n)); o != nil && o.Kind == image.ObjPty {
		return o
	}
	return nil
}

// takePtyCtty runs in a session leader right after its setsid, before
// its children are created (they inherit the controlling terminal at
// fork; a session member cannot take it later): the pty of the
// checkpoint that was its controlling terminal becomes it again
// (TIOCSCTTY on a slave fd lent by the restorer).
func (p *target) takePtyCtty() error {
	o := ctlPty(p.r.c, p.t)
	if o == nil || p.t.State == "Z" {
		return nil
	}
	_, slave, err := p.r.files.ptyPair(p.r.c, o)
	if err != nil {
		return err
	}
	return p.withLent(slave, func(fd uint64) error {
		if _, err := p.sys(p.pid, unix.SYS_IOCTL, fd, unix.TIOCSCTTY, 0); err != nil {
			return fmt.Errorf("controlling terminal %s: %w", ttyName(p.t.TTYNr), err)
		}
		return nil
	})
}

// withLent runs fn with the restorer's fd own installed in the task (at
// the fd fn is given), closed again after.
func (p *target) withLent(own int, fn func(fd uint64) error) error {
	pidfd, err := p.restorerPidfd() // pidns.go
	if err != nil {
		return err
	}
	fd, err := p.sys(p.pid, unix.SYS_PIDFD_GETFD, pidfd, uint64(own), 0)
	p.sys(p.pid, unix.SYS_CLOSE, pidfd)
	if err != nil {
		return err
	}
	defer p.sys(p.pid, unix.SYS_CLOSE, fd)
	return fn(fd)
}

// setPtyFg gives the pty of the checkpoint that is session leader p's
// controlling terminal its recorded foreground group (TIOCSPGRP, the
// group's id as the task sees it), once the task joined its group: every
// group leader exists by then (each made its group right after its
// clone3).
func (p *target) setPtyFg() error {
	t := p.t
	o := ctlPty(p.r.c, t)
	if o == nil || t.SID != t.PID || t.State == "Z" || t.TPGID <= 0 {
		return nil
	}
	g := t.TPGID
	if l := p.r.procs[g]; l != nil {
		g = l.t.InnerPID()
	} else {
		return nil // a group outside the checkpoint was in the foreground
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(g))
	addr, err := p.put(0, b[:])
	if err != nil {
		return err
	}
	_, slave, err := p.r.files.ptyPair(p.r.c, o)
	if err != nil {
		return err
	}
	return p.withLent(slave, func(fd uint64) error {
		if _, err := p.sys(p.pid, unix.SYS_IOCTL, fd, unix.TIOCSPGRP, addr); err != nil {
			return fmt.Errorf("foreground group %d of %s: %w", g, ttyName(t.TTYNr), err)
		}
		return nil
	})
}
