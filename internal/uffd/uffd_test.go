package uffd

import (
	"bytes"
	"errors"
	"runtime/debug"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func newRegion(t *testing.T, pages int) (int, []byte, uint64) {
	t.Helper()
	m, err := unix.Mmap(-1, 0, pages*4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m) })
	fd, err := New(LazyFeatures)
	if err != nil {
		t.Skipf("userfaultfd with lazy features unavailable here: %v", err)
	}
	// Closed before the munmap, which would wait for its unmap event
	// to be read.
	t.Cleanup(func() { unix.Close(fd) })
	addr := uint64(uintptr(unsafePointer(m)))
	if err := Register(fd, addr, uint64(len(m)), RegisterMiss); err != nil {
		t.Fatal(err)
	}
	return fd, m, addr
}

// waitMsg polls fd for one message.
func waitMsg(t *testing.T, fd int) Msg {
	t.Helper()
	buf := make([]byte, MsgSize)
	for {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, 10000); err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatal(err)
		}
		ms, err := Read(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) > 0 {
			return ms[0]
		}
	}
}

func TestFaultCopyZeroEexist(t *testing.T) {
	fd, m, addr := newRegion(t, 4)
	got := make(chan byte, 1)
	go func() { got <- m[4096+7] }() // faults on page 1
	msg := waitMsg(t, fd)
	if msg.Event != EventPagefault || msg.Addr&^4095 != addr+4096 {
		t.Fatalf("message %+v, want a fault at %#x", msg, addr+4096)
	}
	page := bytes.Repeat([]byte{0x5a}, 4096)
	if n, err := Copy(fd, addr+4096, page); err != nil || n != 4096 {
		t.Fatalf("copy: %d, %v", n, err)
	}
	if b := <-got; b != 0x5a {
		t.Fatalf("read %#x after copy, want 0x5a", b)
	}
	// A second copy over two pages stops at the present one.
	n, err := Copy(fd, addr, append(page, page...))
	if n != 4096 || !errors.Is(err, unix.EEXIST) {
		t.Fatalf("copy over a present page: %d, %v; want 4096, EEXIST", n, err)
	}
	if err := ZeroPage(fd, addr+2*4096, 4096); err != nil {
		t.Fatal(err)
	}
	if m[2*4096] != 0 || m[0] != 0x5a {
		t.Fatalf("zero page %#x, copied page %#x", m[2*4096], m[0])
	}
}

var sink byte

func TestPoisonGivesSIGBUS(t *testing.T) {
	fd, m, addr := newRegion(t, 2)
	if err := Poison(fd, addr, 4096); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			t.Skipf("UFFDIO_POISON unsupported by this kernel: %v", err)
		}
		t.Fatal(err)
	}
	unix.Close(fd) // poison outlives the userfaultfd
	faulted := func() (f bool) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() { f = recover() != nil }()
		sink = m[10]
		return false
	}()
	if !faulted {
		t.Fatal("a poisoned page read without a fault")
	}
	if m[4096] != 0 {
		t.Fatal("an unpoisoned missing page is not zero after close")
	}
}

func TestRemoveEvent(t *testing.T) {
	fd, m, addr := newRegion(t, 4)
	done := make(chan error)
	go func() { done <- unix.Madvise(m[:2*4096], unix.MADV_DONTNEED) }()
	msg := waitMsg(t, fd)
	if msg.Event != EventRemove || msg.Start != addr || msg.End != addr+2*4096 {
		t.Fatalf("message %+v, want remove %#x-%#x", msg, addr, addr+2*4096)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("madvise still waits after its event was read")
	}
}
