package dumper

import (
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// fileKind is a regular file, reopened by path on restore. (A deleted one
// is deletedFileKind, a memfd memfdKind.)
type fileKind struct{ noOps }

func (fileKind) fdKind() string { return image.FDFile }

func (fileKind) classifies(link string, mode uint32) bool {
	return isType(mode, unix.S_IFREG) && strings.HasPrefix(link, "/")
}

func (fileKind) owns(*image.FD) bool { return true }

// dirKind is a directory, reopened by path.
type dirKind struct{ noOps }

func (dirKind) fdKind() string                        { return image.FDDir }
func (dirKind) classifies(_ string, mode uint32) bool { return isType(mode, unix.S_IFDIR) }
func (dirKind) owns(*image.FD) bool                   { return true }
