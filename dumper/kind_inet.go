package dumper

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

// classifySocket gives socket fd f of pid the object of its protocol's
// kind when that is an internet kind ckptfs restores (tcp-<ino>, udp-<ino>), by the
// protocol name sockfs gives as the xattr system.sockprotoname ("TCP",
// "TCPv6", "UDP", "UDPv6"); other sockets keep no object here (unix sockets get theirs
// when collected, the rest are refused by unixKind).
func classifySocket(pid int, f *image.FD) error {
	buf := make([]byte, 64)
	n, err := unix.Getxattr(proc.FDPath(pid, f.Num), "system.sockprotoname", buf)
	if err != nil {
		return fmt.Errorf("protocol of socket fd %d of %d: %w", f.Num, pid, err)
	}
	switch unix.ByteSliceToString(buf[:n]) {
	case "TCP", "TCPv6":
		f.Object = image.TCPSocketID(f.Ino)
	case "UDP", "UDPv6":
		f.Object = image.UDPSocketID(f.Ino)
	}
	return nil
}
