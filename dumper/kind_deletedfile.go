package dumper

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// maxDeletedFile bounds the contents saved for a deleted-but-open file.
const maxDeletedFile = 64 << 20

// deletedFileKind is a regular file unlinked while open: an object with
// its path, mode and contents.
type deletedFileKind struct{ noOps }

func (deletedFileKind) fdKind() string        { return image.FDFile }
func (deletedFileKind) owns(f *image.FD) bool { return f.Deleted }

// collect saves the contents of an unlinked file that is still open.
func (deletedFileKind) collect(cc *collection, t *image.Task, f *image.FD) error {
	c, pid := cc.c, t.PID
	f.Object = image.DeletedFileID(f.Ino)
	if c.Object(f.Object) != nil {
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
	d := &image.DeletedFile{Path: f.Path, Mode: st.Mode & 0o7777}
	c.Objects = append(c.Objects, &image.Object{ID: f.Object, Kind: image.ObjDeletedFile, Info: d.Info(), Data: data})
	return nil
}
