package proc

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// SockDiag sends one NETLINK_SOCK_DIAG dump request of the network
// namespace we run in (req: the family's request, after the nlmsghdr this
// adds: unix_diag_req, inet_diag_req_v2, ...) and calls each with the
// payload of every socket message of the reply, until the dump ends.
func SockDiag(req []byte, each func(msg []byte)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	ne := binary.NativeEndian
	b := make([]byte, unix.NLMSG_HDRLEN+len(req))
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(b[8:], 1)
	copy(b[unix.NLMSG_HDRLEN:], req)
	if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("sock_diag reply: %w", err)
		}
		done, err := parseSockDiagReply(buf[:n], each)
		if err != nil || done {
			return err
		}
	}
}

// parseSockDiagReply calls each with the socket messages of one reply
// datagram; done says the dump ended (NLMSG_DONE, or an acknowledgement).
func parseSockDiagReply(b []byte, each func(msg []byte)) (done bool, err error) {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return false, fmt.Errorf("sock_diag reply: %w", err)
	}
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.NLMSG_DONE:
			return true, nil
		case unix.NLMSG_ERROR:
			if len(m.Data) < 4 {
				return false, fmt.Errorf("sock_diag: error reply")
			}
			if e := int32(binary.NativeEndian.Uint32(m.Data)); e != 0 {
				return false, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
			}
			return true, nil
		}
		each(m.Data)
	}
	return false, nil
}
