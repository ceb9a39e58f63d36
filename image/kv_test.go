package image

import (
	"bytes"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
)

func TestKVAddAsFmt(t *testing.T) {
	type named string
	type nint int
	vals := []any{0, 1, -1, 42, math.MaxInt64, math.MinInt64, int64(-5), int32(-7), int32(math.MinInt32), uint64(0), uint64(math.MaxUint64), uint32(9), uint(3), uint16(65535), uint8(255), "x y", "", named("n"), nint(4), true, 1.5, int8(-3), int16(-4)}
	for _, f := range []string{"%s", "%d", "%#x", "%04o", "%#016x", "%x"} {
		for _, v := range vals {
			var k kv
			k.add("key", f, v)
			want := fmt.Sprintf("key: "+f+"\n", v)
			if got := string(k.bytes()); got != want {
				t.Errorf("%s %T %v: got %q want %q", f, v, v, got, want)
			}
		}
	}
}

func TestRenderSigactionsAsFmt(t *testing.T) {
	sa := []Sigaction{{Signo: 1}, {Signo: 2, Handler: 1}, {Signo: 10, Handler: 0x401234, Flags: 0x4000000, Restorer: 0x7f0011223344, Mask: 0x10000}, {Signo: 34}, {Signo: 64, Handler: ^uint64(0), Flags: ^uint64(0), Restorer: ^uint64(0), Mask: ^uint64(0)}}
	var want strings.Builder
	fmt.Fprintf(&want, "%-4s %-12s %-18s %-18s %-18s %s\n", "#", "signal", "handler", "flags", "restorer", "mask")
	for _, s := range sa {
		fmt.Fprintf(&want, "%-4d %-12s %-18s %-18s %-18s %s\n", s.Signo, signalName(s.Signo),
			fmtHandler(s.Handler), hexs(s.Flags), hexs(s.Restorer), hexs(s.Mask))
	}
	if got := string(renderSigactions(sa)); got != want.String() {
		t.Errorf("got\n%s\nwant\n%s", got, want.String())
	}
}

func TestDirNameAsFmt(t *testing.T) {
	for _, v := range []VMA{{}, {Start: 0x400000, End: 0x401000}, {Start: 0x7ffff7fc1000, End: 0xffffffffff601000}, {Start: ^uint64(0), End: ^uint64(0)}} {
		if got, want := v.DirName(), fmt.Sprintf("%x-%x", v.Start, v.End); got != want {
			t.Errorf("got %q want %q", got, want)
		}
	}
}

func TestCleanRel(t *testing.T) {
	for _, rel := range []string{"", ".", "..", "a", "a/b", "a//b", "/a", "a/", "a/./b", "a/../b", "../a", "a/..", "./a", "tasks/1/vmas/400000-401000/info", "a/.b/..c"} {
		if got, want := cleanRel(rel), rel != "" && filepath.Clean(rel) == rel && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel); got != want {
			t.Errorf("cleanRel(%q) = %v, want %v", rel, got, want)
		}
	}
}

func TestRenderMapsAsFmt(t *testing.T) {
	vs := []*VMA{
		{Start: 0x400000, End: 0x401000, Perms: "r-xp", Dev: "fd:01", Inode: 1234, Name: "/usr/bin/x"},
		{Start: 0x7ffff7fc1000, End: 0x7ffff7fc5000, Perms: "r--p", Offset: 0x1000, Dev: "00:00", Name: "[vvar]"},
		{Start: 0, End: 0x1000, Perms: "---p", Dev: "00:00"},
		{Start: ^uint64(0) - 0xfff, End: ^uint64(0), Perms: "rw-s", Offset: 0x123456789, Dev: "00:05", Inode: ^uint64(0), Name: "/a name that is long enough to pass the column of seventy-two"},
	}
	var want bytes.Buffer
	for _, v := range vs {
		start := want.Len()
		fmt.Fprintf(&want, "%08x-%08x %s %08x %s %d ", v.Start, v.End, v.Perms, v.Offset, v.Dev, v.Inode)
		if v.Name != "" {
			for want.Len()-start < 72 {
				want.WriteByte(' ')
			}
			want.WriteByte(' ')
			want.WriteString(v.Name)
		}
		want.WriteByte('\n')
	}
	if got := string(RenderMaps(vs)); got != want.String() {
		t.Errorf("got\n%s\nwant\n%s", got, want.String())
	}
}
