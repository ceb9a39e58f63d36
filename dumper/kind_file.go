package dumper

import (
	"errors"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/fileid"
)

// fileKind is a regular file, reopened by path on restore. (A deleted one
// is deletedFileKind, a memfd memfdKind.)
type fileKind struct{ noOps }

func (fileKind) fdKind() string { return image.FDFile }

func (fileKind) classifies(link string, mode uint32) bool {
	return isType(mode, unix.S_IFREG) && strings.HasPrefix(link, "/")
}

func (fileKind) owns(*image.FD) bool { return true }

// dump records the file's identity (device and file handle, the inode is
// FD.Ino), which a restore checks before it opens the file with more
// rights than the task's own (restorer/preopen.go). A file system without
// file handles records the device alone.
func (fileKind) dump(pid int, f *image.FD) error {
	id, err := fileid.OfFD(pid, f.Num)
	if err != nil && !errors.Is(err, fileid.ErrNoHandle) {
		return err
	}
	f.Extra = append(f.Extra, image.FileID{Dev: id.Dev, Handle: id.Handle}.Lines()...)
	return nil
}

// fileIDs holds, for the fds of one process being collected, the identity
// of each file by device and inode, so that 7,000 fds of one file cost one
// name_to_handle_at while the tree is frozen, not 7,000. The fds hold
// their files open, so no inode number is reused meanwhile.
type fileIDs map[[2]uint64]fileid.ID

// dumpStat is dump given the fd's stat (only the file handle is asked
// for), with the identity taken from ids when another fd of the process has
// the same file.
func (k fileKind) dumpStat(pid int, f *image.FD, st *unix.Stat_t, ids fileIDs) error {
	key := [2]uint64{st.Dev, st.Ino}
	id, ok := ids[key]
	if !ok {
		var err error
		if id, err = fileid.OfFDStat(pid, f.Num, st); err != nil && !errors.Is(err, fileid.ErrNoHandle) {
			return err
		}
		ids[key] = id
	}
	f.Extra = append(f.Extra, image.FileID{Dev: id.Dev, Handle: id.Handle}.Lines()...)
	return nil
}

// dirKind is a directory, reopened by path.
type dirKind struct{ noOps }

func (dirKind) fdKind() string                        { return image.FDDir }
func (dirKind) classifies(_ string, mode uint32) bool { return isType(mode, unix.S_IFDIR) }
func (dirKind) owns(*image.FD) bool                   { return true }
