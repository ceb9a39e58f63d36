package dumper

import "github.com/ckptfs/ckptfs/image"

// epollKind is an epoll instance: its watches (fd, events, data), from
// fdinfo's tfd lines.
type epollKind struct{ noOps }

func (epollKind) fdKind() string { return image.FDEpoll }
func (epollKind) classifies(link string, _ uint32) bool {
	return link == "anon_inode:[eventpoll]"
}
func (epollKind) owns(*image.FD) bool { return true }

func (epollKind) dump(_ int, f *image.FD) error { return kernelLines(f, image.ParseEpoll) }
