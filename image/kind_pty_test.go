package image

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// TestPtyRoundTrip renders a pty pair's object and parses it back, and
// refuses info that does not fit its data or name.
func TestPtyRoundTrip(t *testing.T) {
	p := &Pty{Index: 7, UID: 65534, GID: 5, Mode: 0o620, Iflag: 0x4500, Oflag: 5, Cflag: 0xbf, Lflag: 0x8a3b,
		CC: bytes.Repeat([]byte{3}, PtyCCs), Rows: 30, Cols: 100, Packet: true}
	o := p.Object([]byte("in"), []byte("out\r\n"))
	got, err := ParsePty(o, true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, p) {
		t.Fatalf("parsed %+v, want %+v", got, p)
	}
	if in, out := got.Queued(o); string(in) != "in" || string(out) != "out\r\n" {
		t.Fatalf("queued %q %q", in, out)
	}
	bad := func(edit func(o *Object), want string) {
		t.Helper()
		c := &Object{ID: o.ID, Kind: o.Kind, Info: append([]string{}, o.Info...), Data: o.Data}
		edit(c)
		if _, err := ParsePty(c, true); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want an error with %q, got %v", want, err)
		}
	}
	bad(func(o *Object) { o.Data = o.Data[1:] }, "its data has 6")
	bad(func(o *Object) { o.ID = PtyID(8) }, "does not match")
	bad(func(o *Object) { o.Info = replaceLine(o.Info, "cc", "cc: 0303") }, "hex bytes")
	bad(func(o *Object) { o.Info = replaceLine(o.Info, "mode", "mode: 0100644") }, "permission mode")
	bad(func(o *Object) { o.Info = append(o.Info, "colour: red") }, "colour")

	f := &FD{Kind: FDPty, Path: "/dev/ptmx", Extra: []string{"mnt_id:\t24", "ino:\t91", "tty-index:\t7"}}
	if n, err := PtyMasterIndex(f, false); err != nil || n != 7 {
		t.Fatalf("master index %d, %v", n, err)
	}
	if err := Refusal(f); err != nil {
		t.Fatalf("Refusal of a pty master: %v", err)
	}
}

func replaceLine(lines []string, key, with string) []string {
	out := append([]string{}, lines...)
	for i, l := range out {
		if strings.HasPrefix(l, key+":") {
			out[i] = with
		}
	}
	return out
}
