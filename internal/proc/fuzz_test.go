package proc

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// Fuzz targets for the /proc and sock_diag parsers: whatever the kernel (or
// a corrupted buffer) hands them, they return an error, never panic. Seeds
// are in testdata/fuzz/<target>/ and run with plain `go test`; fuzz with
// e.g. go test ./internal/proc -run '^$' -fuzz '^FuzzParseStat$' -parallel 1.

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("42 (a) b) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 9 1 1 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseStat(b)
		if err == nil && s.State == "" {
			t.Fatalf("ParseStat(%q) gave no state and no error", b)
		}
	})
}

func FuzzParseMaps(f *testing.F) {
	f.Add([]byte("00400000-00401000 r-xp 00000000 fd:01 42                                 /bin/x y\n7ffd0000-7ffd1000 rw-p 00000000 00:00 0 [stack]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := ParseMaps(b)
		if err != nil {
			return
		}
		for _, m := range ms {
			_ = m.Name
		}
		ParseSmapsFlags(b)
	})
}

func FuzzKeyValues(f *testing.F) {
	f.Add([]byte("pos:\t0\nflags:\t0100002\nmnt_id:\t24\nino:\t3\ninotify wd:1 ino:2 sdev:3 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:0011\n"))
	f.Add([]byte("Name:\tx\nUid:\t0\t0\t0\t0\nGroups:\t1 2 x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range KeyValues(b) {
			IDs(v)
		}
	})
}

// unixDiagSeed is one sock_diag reply: a named listener, then NLMSG_DONE.
func unixDiagSeed() []byte {
	le := binary.LittleEndian
	msg := make([]byte, 16+16)
	msg[16], msg[17], msg[18] = 1, 1, 10 // AF_UNIX, SOCK_STREAM, TCP_LISTEN
	le.PutUint32(msg[20:], 77)
	attr := func(typ uint16, v []byte) {
		a := make([]byte, (4+len(v)+3)&^3)
		le.PutUint16(a, uint16(4+len(v)))
		le.PutUint16(a[2:], typ)
		copy(a[4:], v)
		msg = append(msg, a...)
	}
	attr(unixDiagName, []byte("/tmp/sock\x00"))
	attr(unixDiagPeer, []byte{5, 0, 0, 0})
	attr(unixDiagIcons, []byte{1, 0, 0, 0, 2, 0, 0, 0})
	attr(unixDiagRQLen, make([]byte, 8))
	le.PutUint32(msg, uint32(len(msg)))
	le.PutUint16(msg[4:], unix.SOCK_DIAG_BY_FAMILY)
	done := make([]byte, 20)
	le.PutUint32(done, 20)
	le.PutUint16(done[4:], 3) // NLMSG_DONE
	return append(msg, done...)
}

func FuzzUnixDiag(f *testing.F) {
	f.Add(unixDiagSeed())
	f.Fuzz(func(t *testing.T, b []byte) {
		out := map[uint64]*UnixSocket{}
		parseUnixDiagReply(b, out)
		if len(b) >= 16 {
			parseUnixDiag(b)
		}
	})
}

func TestUnixDiagSeed(t *testing.T) {
	out := map[uint64]*UnixSocket{}
	done, err := parseUnixDiagReply(unixDiagSeed(), out)
	s := out[77]
	if err != nil || !done || s == nil || s.Name != "/tmp/sock" || s.Peer != 5 || len(s.Icons) != 2 || s.State != 10 {
		t.Fatalf("done %v err %v socket %+v", done, err, s)
	}
}
