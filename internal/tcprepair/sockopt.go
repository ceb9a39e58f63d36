// Package tcprepair reads and rebuilds an established TCP connection with
// the kernel's repair mode (TCP_REPAIR), after CRIU's soccr: a socket in
// repair mode shows and takes its sequence numbers, queues, options and
// window, and sends nothing when it is closed or connected.
package tcprepair

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// getsockopt reads option opt of level into buf and returns its length.
func getsockopt(fd, level, opt int, buf []byte) (int, error) {
	n := uint32(len(buf))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// setsockopt sets option opt of level to the bytes of buf.
func setsockopt(fd, level, opt int, buf []byte) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// Window is struct tcp_repair_window.
type Window struct {
	SndWl1, SndWnd, MaxWindow, RcvWnd, RcvWup uint32
}

const sizeofWindow = 20

func getWindow(fd int) (Window, error) {
	var w Window
	buf := make([]byte, sizeofWindow)
	n, err := getsockopt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, buf)
	if err != nil {
		return w, fmt.Errorf("get TCP_REPAIR_WINDOW: %w", err)
	}
	if n != sizeofWindow {
		return w, fmt.Errorf("get TCP_REPAIR_WINDOW: %d bytes", n)
	}
	w = *(*Window)(unsafe.Pointer(&buf[0]))
	return w, nil
}

func setWindow(fd int, w Window) error {
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&w)), sizeofWindow)
	if err := setsockopt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW, buf); err != nil {
		return fmt.Errorf("set TCP_REPAIR_WINDOW: %w", err)
	}
	return nil
}

// setRepairOptions sets the options a connection negotiated at its SYN
// (struct tcp_repair_opt array).
func setRepairOptions(fd int, opts []unix.TCPRepairOpt) error {
	if len(opts) == 0 {
		return nil
	}
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&opts[0])), len(opts)*unix.SizeofTCPRepairOpt)
	if err := setsockopt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, buf); err != nil {
		return fmt.Errorf("set TCP_REPAIR_OPTIONS: %w", err)
	}
	return nil
}

// tcpInfoHead is the start of struct tcp_info: the option bits and window
// scales x/sys/unix's TCPInfo leaves out (they are bit fields).
type tcpInfoHead struct {
	State, Options, SndWscale, RcvWscale uint8
	RcvMSS                               uint32
}

func getInfoHead(fd int) (tcpInfoHead, error) {
	buf := make([]byte, 256)
	n, err := getsockopt(fd, unix.IPPROTO_TCP, unix.TCP_INFO, buf)
	if err != nil {
		return tcpInfoHead{}, fmt.Errorf("get TCP_INFO: %w", err)
	}
	if n < 32 {
		return tcpInfoHead{}, fmt.Errorf("get TCP_INFO: %d bytes", n)
	}
	// u8 state, ca_state, retransmits, probes, backoff, options,
	// snd_wscale:4 rcv_wscale:4, ...; u32 rto, ato, snd_mss, rcv_mss.
	return tcpInfoHead{State: buf[0], Options: buf[5], SndWscale: buf[6] & 0xf, RcvWscale: buf[6] >> 4,
		RcvMSS: *(*uint32)(unsafe.Pointer(&buf[20]))}, nil
}
