package dumper

import (
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// TestKernelFDLines: the dumper turns this kernel's fdinfo lines of real
// eventfd, epoll, timerfd and signalfd fds into their typed lines, which
// Load reads strictly (format 3).
func TestKernelFDLines(t *testing.T) {
	efd, err := unix.Eventfd(5, unix.EFD_CLOEXEC|unix.EFD_SEMAPHORE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ep)
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: 77, Pad: 1}); err != nil {
		t.Fatal(err)
	}
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tfd)
	spec := unix.ItimerSpec{Interval: unix.NsecToTimespec(int64(time.Hour)), Value: unix.NsecToTimespec(int64(2 * time.Hour))}
	if err := unix.TimerfdSettime(tfd, 0, &spec, nil); err != nil {
		t.Fatal(err)
	}
	mask := unix.Sigset_t{Val: [16]uint64{1 << (unix.SIGUSR1 - 1)}}
	sfd, err := unix.Signalfd(-1, &mask, unix.SFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sfd)

	f := fdOf(t, efd)
	if e, err := image.ParseEventfd(f, true); err != nil || e != (image.Eventfd{Count: 5, Semaphore: true}) {
		t.Errorf("eventfd %q: %+v %v", f.Extra, e, err)
	}
	f = fdOf(t, ep)
	// The kernel always reports EPOLLERR and EPOLLHUP as watched.
	want := []image.EpollWatch{{TFD: efd, Events: unix.EPOLLIN | unix.EPOLLET | unix.EPOLLERR | unix.EPOLLHUP, Data: 1<<32 | 77}}
	if e, err := image.ParseEpoll(f, true); err != nil || !slices.Equal(e.Watches, want) {
		t.Errorf("epoll %q: %+v %v, want %+v", f.Extra, e, err, want)
	}
	f = fdOf(t, tfd)
	tm, err := image.ParseTimerfd(f, true)
	if err != nil || tm.Clock != unix.CLOCK_MONOTONIC || tm.Interval != (image.Timespec{Sec: 3600}) || tm.Value.Sec < 3500 || tm.Value.Sec > 7200 {
		t.Errorf("timerfd %q: %+v %v", f.Extra, tm, err)
	}
	f = fdOf(t, sfd)
	if s, err := image.ParseSignalfd(f, true); err != nil || s.Mask != 1<<(unix.SIGUSR1-1) {
		t.Errorf("signalfd %q: %+v %v", f.Extra, s, err)
	}
	for _, fd := range []int{efd, ep, tfd, sfd} {
		f := fdOf(t, fd)
		if err := image.Refusal(f); err != nil {
			t.Errorf("fd %d (%s): refused: %v", fd, f.Kind, err)
		}
	}
}

// TestKindTable: every fd kind the image knows has exactly one dumper
// kind that classifies or owns it.
func TestKindTable(t *testing.T) {
	for _, k := range image.FDKinds() {
		got := kindOf(&image.FD{Kind: k})
		if got.fdKind() != k {
			t.Errorf("fd kind %s: dumper kind %T", k, got)
		}
	}
	if _, ok := kindOf(&image.FD{Kind: image.FDFile, Deleted: true, Path: "/memfd:x"}).(memfdKind); !ok {
		t.Error("a deleted /memfd: file is not memfdKind")
	}
	if _, ok := kindOf(&image.FD{Kind: image.FDFile, Deleted: true, Path: "/tmp/x"}).(deletedFileKind); !ok {
		t.Error("a deleted file is not deletedFileKind")
	}
}
