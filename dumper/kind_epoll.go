package dumper

import "github.com/ckptfs/ckptfs/image"

// epollKind is an epoll instance: its watches (fd, events, data), from
// fdinfo's tfd lines, which its schema reads (fdKindState).
type epollKind struct{ noOps }

func (epollKind) fdKind() string { return image.FDEpoll }
func (epollKind) classifies(link string, _ uint32) bool {
	return link == "anon_inode:[eventpoll]"
}
func (epollKind) owns(*image.FD) bool { return true }
