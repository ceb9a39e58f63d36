package dumper

import (
	"fmt"
	"os"
	"path/filepath"
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
	if err == unix.EINVAL {
		seals = 0 // a deleted file of a filesystem without seals (deletedAsMemfd)
	} else if err != nil {
		return nil, fmt.Errorf("F_GET_SEALS: %w", err)
	}
	m := &image.Memfd{Name: name, Size: st.Size, Mode: st.Mode & 0o7777, Seals: uint32(seals), Dev: mapsDev(st.Dev), Ino: st.Ino}
	var data []byte
	if m.DataRanges, data, err = unmappedData(c, m.Dev, st.Ino, file, st.Size); err != nil {
		return nil, err
	}
	return &image.Object{ID: image.MemfdID(st.Ino), Kind: image.ObjMemfd, Info: m.Info(), Data: data}, nil
}

// deletedAsMemfd returns the name vma v is recorded with: a mapping of a
// regular file deleted at dump time (POSIX semaphores: sem_open then
// sem_unlink; a shm_unlink'd segment; a replaced library) has nothing to
// be reopened by path, so it is recorded as a memfd of the file's base
// name ("/memfd:sem.x (deleted)") whose contents the dump saves
// (collectShm) and the restore recreates, unlinked, as a memfd: to the
// kernel both are unlinked shmem-like files. If an fd of the tree also
// holds the file, collectShm refuses it (the fd is a deleted-file object
// of its own, and the two would come back as two files).
func deletedAsMemfd(v *image.VMA) string {
	const deleted = " (deleted)"
	if v.Inode == 0 || !strings.HasPrefix(v.Name, "/") || strings.HasPrefix(v.Name, "/memfd:") ||
		strings.HasPrefix(v.Name, "/SYSV") || strings.HasPrefix(v.Name, "/dev/zero") || !strings.HasSuffix(v.Name, deleted) {
		return v.Name
	}
	return "/memfd:" + filepath.Base(strings.TrimSuffix(v.Name, deleted)) + deleted
}
