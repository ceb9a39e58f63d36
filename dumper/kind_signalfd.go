package dumper

import "github.com/ckptfs/ckptfs/image"

// signalfdKind is a signalfd: its signal mask, from fdinfo, which its
// schema reads (fdKindState). The signals
// it reads are the tasks' pending signals, recorded with the threads.
type signalfdKind struct{ noOps }

func (signalfdKind) fdKind() string { return image.FDSignalfd }
func (signalfdKind) classifies(link string, _ uint32) bool {
	return link == "anon_inode:[signalfd]"
}
func (signalfdKind) owns(*image.FD) bool { return true }
