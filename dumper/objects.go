package dumper

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// maxDeletedFile bounds the contents saved for a deleted-but-open file.
const maxDeletedFile = 64 << 20

// collectObjects records, once per checkpoint, the kernel objects the fds
// of the frozen tree refer to (pipes with their bytes in flight, unix
// sockets with their queued bytes and peers, deleted files with their
// contents), and marks fds that share one open file description.
func collectObjects(c *image.Checkpoint) error {
	var socks *unixTree
	for _, t := range c.Tasks {
		for _, f := range t.FDs {
			var err error
			switch {
			case f.Kind == image.FDPipe:
				err = addPipe(c, t.PID, f)
			case f.Kind == image.FDSocket:
				if socks == nil {
					if socks, err = newUnixTree(c); err != nil {
						return err
					}
				}
				err = socks.add(c, t, f) // unixsock.go
			case isMemfd(f):
				err = addMemfd(c, t.PID, f) // shm.go
			case f.Kind == image.FDFile && f.Deleted:
				err = addDeletedFile(c, t.PID, f)
			}
			if _, ok := err.(*ErrUnsupported); ok {
				return err // names pid and fd itself
			}
			if err != nil {
				return fmt.Errorf("process %d fd %d: %w", t.PID, f.Num, err)
			}
		}
	}
	if err := collectShm(c); err != nil {
		return err
	}
	return markSharedFiles(c)
}

// addPipe saves the bytes in flight of the pipe f refers to. Opening
// /proc/<pid>/fd/<n> gives a new read end of the same pipe, and tee(2)
// copies its buffer into a pipe of ours without consuming it.
func addPipe(c *image.Checkpoint, pid int, f *image.FD) error {
	id := "pipe-" + strconv.FormatUint(f.Ino, 10)
	f.Object = id
	if c.Object(id) != nil {
		return nil
	}
	src, err := os.OpenFile(proc.FDPath(pid, f.Num), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open pipe: %w", err)
	}
	defer src.Close()
	size, err := unix.FcntlInt(src.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return fmt.Errorf("pipe size: %w", err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
		return fmt.Errorf("size our pipe: %w", err)
	}
	var data []byte
	n, err := unix.Tee(int(src.Fd()), p[1], size, unix.SPLICE_F_NONBLOCK)
	if err == unix.EAGAIN {
		n = 0 // empty pipe
	} else if err != nil {
		return fmt.Errorf("tee pipe: %w", err)
	}
	data = make([]byte, n)
	for got := 0; got < int(n); {
		k, err := unix.Read(p[0], data[got:])
		if err != nil || k == 0 {
			return fmt.Errorf("read teed bytes: %v", err)
		}
		got += k
	}
	c.Objects = append(c.Objects, &image.Object{ID: id, Kind: image.ObjPipe, Data: data,
		Info: []string{"ino: " + strconv.FormatUint(f.Ino, 10), "capacity: " + strconv.Itoa(size)}})
	return nil
}

// addDeletedFile saves the contents of an unlinked file that is still open.
func addDeletedFile(c *image.Checkpoint, pid int, f *image.FD) error {
	id := "file-" + strconv.FormatUint(f.Ino, 10)
	f.Object = id
	if c.Object(id) != nil {
		return nil
	}
	if f.Size > maxDeletedFile {
		return &ErrUnsupported{PID: pid, FD: f.Num, Kind: fmt.Sprintf("a deleted file larger than %d MiB", maxDeletedFile>>20), What: f.Path}
	}
	data, err := os.ReadFile(proc.FDPath(pid, f.Num))
	if err != nil {
		return fmt.Errorf("read deleted file: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(proc.FDPath(pid, f.Num), &st); err != nil {
		return err
	}
	c.Objects = append(c.Objects, &image.Object{ID: id, Kind: image.ObjDeletedFile, Data: data,
		Info: []string{image.TextLine("path", f.Path), "mode: " + strconv.FormatUint(uint64(st.Mode&0o7777), 8)}})
	return nil
}

// markSharedFiles gives fds that are the same open file description (kcmp)
// the same OFD id, so a restore shares their offset again.
func markSharedFiles(c *image.Checkpoint) error {
	type ref struct {
		pid int
		fd  *image.FD
	}
	byIno := map[uint64][]ref{}
	for _, t := range c.Tasks {
		for _, f := range t.FDs {
			if f.Ino != 0 {
				byIno[f.Ino] = append(byIno[f.Ino], ref{t.PID, f})
			}
		}
	}
	n := 0
	for _, refs := range byIno {
		for i, a := range refs {
			if a.fd.OFD != "" {
				continue
			}
			for _, b := range refs[i+1:] {
				if b.fd.OFD != "" {
					continue
				}
				same, err := ptrace.SameFile(a.pid, a.fd.Num, b.pid, b.fd.Num)
				if err != nil {
					return fmt.Errorf("kcmp %d/%d %d/%d: %w", a.pid, a.fd.Num, b.pid, b.fd.Num, err)
				}
				if same {
					if a.fd.OFD == "" {
						n++
						a.fd.OFD = "ofd-" + strconv.Itoa(n)
					}
					b.fd.OFD = a.fd.OFD
				}
			}
		}
	}
	return nil
}
