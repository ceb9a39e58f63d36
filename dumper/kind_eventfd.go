package dumper

import "github.com/ckptfs/ckptfs/image"

// eventfdKind is an eventfd: its count and semaphore flag, from fdinfo,
// which its schema reads (fdKindState).
type eventfdKind struct{ noOps }

func (eventfdKind) fdKind() string { return image.FDEventfd }
func (eventfdKind) classifies(link string, _ uint32) bool {
	return link == "anon_inode:[eventfd]"
}
func (eventfdKind) owns(*image.FD) bool { return true }
