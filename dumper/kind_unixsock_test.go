package dumper

import (
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// TestPeekQueueKeepsMessages peeks a datagram and a seqpacket queue (an
// empty message among them): every message with its length, in order,
// nothing consumed, the socket's peek offset as it was.
func TestPeekQueueKeepsMessages(t *testing.T) {
	for _, typ := range []int{unix.SOCK_DGRAM, unix.SOCK_SEQPACKET, unix.SOCK_STREAM} {
		sp, err := unix.Socketpair(unix.AF_UNIX, typ, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(sp[0])
		defer unix.Close(sp[1])
		msgs := []string{"one", "", "three", strings.Repeat("x", 100000)}
		for _, m := range msgs {
			if _, err := unix.Write(sp[0], []byte(m)); err != nil {
				t.Fatal(err)
			}
		}
		data, got, err := peekQueue(os.Getpid(), sp[1], typ)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.Join(msgs, ""); string(data) != want {
			t.Fatalf("type %d: peeked %d bytes, want %d", typ, len(data), len(want))
		}
		if typ != unix.SOCK_STREAM {
			want := []image.UnixMsg{{Len: 3}, {Len: 0}, {Len: 5}, {Len: 100000}}
			if !slices.Equal(got, want) {
				t.Fatalf("type %d: messages %+v, want %+v", typ, got, want)
			}
		}
		if off, err := unix.GetsockoptInt(sp[1], unix.SOL_SOCKET, unix.SO_PEEK_OFF); err != nil || off != -1 {
			t.Fatalf("peek offset %d %v after the dump, want -1", off, err)
		}
		buf := make([]byte, 1<<17)
		n, err := unix.Read(sp[1], buf)
		if err != nil || string(buf[:n]) != "one" && typ != unix.SOCK_STREAM {
			t.Fatalf("type %d: first read %q %v: the queue changed", typ, buf[:n], err)
		}
	}
}

// TestPeekQueueRefusesRights: an fd in flight is refused, and not leaked.
func TestPeekQueueRefusesRights(t *testing.T) {
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])
	if err := unix.Sendmsg(sp[0], []byte("x"), unix.UnixRights(0), nil, 0); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadDir("/proc/self/fd")
	_, _, err = peekQueue(os.Getpid(), sp[1], unix.SOCK_DGRAM)
	if _, ok := err.(*ErrUnsupported); !ok || !strings.Contains(err.Error(), "SCM_RIGHTS") {
		t.Fatalf("peek with an fd in flight: %v", err)
	}
	if after, _ := os.ReadDir("/proc/self/fd"); len(after) != len(before) {
		t.Fatalf("%d fds before, %d after", len(before), len(after))
	}
}
