package dumper

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// pipeKind is a pipe or named FIFO: an object with its capacity and the
// bytes in flight.
type pipeKind struct{ noOps }

func (pipeKind) fdKind() string                        { return image.FDPipe }
func (pipeKind) classifies(_ string, mode uint32) bool { return isType(mode, unix.S_IFIFO) }
func (pipeKind) owns(*image.FD) bool                   { return true }

// collect saves the bytes in flight of the pipe f refers to. Opening
// /proc/<pid>/fd/<n> gives a new read end of the same pipe, and tee(2)
// copies its buffer into a pipe of ours without consuming it.
func (pipeKind) collect(cc *collection, t *image.Task, f *image.FD) error {
	c, pid := cc.c, t.PID
	f.Object = image.PipeID(f.Ino)
	if c.Object(f.Object) != nil {
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
	n, err := unix.Tee(int(src.Fd()), p[1], size, unix.SPLICE_F_NONBLOCK)
	if err == unix.EAGAIN {
		n = 0 // empty pipe
	} else if err != nil {
		return fmt.Errorf("tee pipe: %w", err)
	}
	data := make([]byte, n)
	for got := 0; got < int(n); {
		k, err := unix.Read(p[0], data[got:])
		if err != nil || k == 0 {
			return fmt.Errorf("read teed bytes: %v", err)
		}
		got += k
	}
	c.Objects = append(c.Objects, (&image.Pipe{Ino: f.Ino, Capacity: size}).Object(data))
	return nil
}
