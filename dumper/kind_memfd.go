package dumper

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// memfdKind is a memfd an fd holds ("/memfd:<name> (deleted)"): an object
// with its name, size, mode, seals and the pages no vma holds. A memfd
// only vmas map is found by collectShm (shm.go).
type memfdKind struct{ noOps }

func (memfdKind) fdKind() string        { return image.FDFile }
func (memfdKind) owns(f *image.FD) bool { return isMemfd(f) }

// isMemfd reports an fd on a memfd.
func isMemfd(f *image.FD) bool {
	return f.Kind == image.FDFile && f.Deleted && strings.HasPrefix(f.Path, "/memfd:")
}

// collect records the memfd that fd f of task t refers to.
func (memfdKind) collect(cc *collection, t *image.Task, f *image.FD) error {
	c := cc.c
	f.Object = image.MemfdID(f.Ino)
	if c.Object(f.Object) != nil {
		return nil
	}
	o, err := memfdObject(c, proc.FDPath(t.PID, f.Num), strings.TrimPrefix(f.Path, "/memfd:"))
	if err != nil {
		return fmt.Errorf("memfd %s: %w", f.Path, err)
	}
	c.Objects = append(c.Objects, o)
	return nil
}

// memfdObject reads the memfd at path (an fd or map_files link of a task).
func memfdObject(c *image.Checkpoint, path, name string) (*image.Object, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(file.Fd()), &st); err != nil {
		return nil, err
	}
	seals, err := unix.FcntlInt(file.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("F_GET_SEALS: %w", err)
	}
	m := &image.Memfd{Name: name, Size: st.Size, Mode: st.Mode & 0o7777, Seals: uint32(seals), Dev: mapsDev(st.Dev), Ino: st.Ino}
	var data []byte
	if m.DataRanges, data, err = unmappedData(c, m.Dev, st.Ino, file, st.Size); err != nil {
		return nil, err
	}
	return &image.Object{ID: image.MemfdID(st.Ino), Kind: image.ObjMemfd, Info: m.Info(), Data: data}, nil
}
