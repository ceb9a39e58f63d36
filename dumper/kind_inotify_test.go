package dumper

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

func TestParseInotifyLine(t *testing.T) {
	w, err := parseInotifyLine("inotify wd:1f ino:9a60d2 sdev:fe00000 mask:80000002 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:d2609a002e99f858")
	if err != nil {
		t.Fatal(err)
	}
	if w.wd != 0x1f || w.ino != 0x9a60d2 || w.dev != 0xfe00000 || w.mask != 0x80000002 || w.htype != 1 || len(w.handle) != 8 || w.handle[0] != 0xd2 {
		t.Fatalf("parsed %+v", w)
	}
	// No handle (the file system has none): parsed, left unresolved.
	w, err = parseInotifyLine("inotify wd:2 ino:5 sdev:15 mask:2 ignored_mask:0")
	if err != nil || w.handle != nil {
		t.Fatalf("parsed %+v, %v", w, err)
	}
	w.resolve(nil)
	if w.path != "" || w.problem == "" {
		t.Fatalf("resolved a watch without a handle: %+v", w)
	}
	for _, bad := range []string{"inotify ino:5", "inotify wd:zz", "inotify wd:1 f_handle:xyz"} {
		if _, err := parseInotifyLine(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/plain`: "/plain", `/x\134y`: `/x\y`, `/end\04`: `/end\04`} {
		if got := proc.UnescapeMountinfo(in); got != want {
			t.Errorf("proc.UnescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

// fdOf reads fd n of this process as collectFDs does (collectFDs itself
// would race with fds the Go runtime opens and closes meanwhile).
func fdOf(t *testing.T, n int) *image.FD {
	t.Helper()
	pid := os.Getpid()
	link, err := os.Readlink(proc.FDPath(pid, n))
	if err != nil {
		t.Fatal(err)
	}
	info, err := proc.Read(pid, "fdinfo/"+strconv.Itoa(n))
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(n, &st); err != nil {
		t.Fatal(err)
	}
	f := &image.FD{Num: n, Path: link, Kind: fdKind(link, st.Mode)}
	for _, line := range strings.Split(strings.TrimRight(string(info), "\n"), "\n") {
		if k, _, _ := strings.Cut(line, ":"); k != "pos" && k != "flags" {
			f.Extra = append(f.Extra, line)
		}
	}
	if err := fdKindState(pid, f); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestInotifyWatchPaths: the watches of a real inotify fd are recorded in
// wd order with their masks and paths.
func TestInotifyWatchPaths(t *testing.T) {
	dir := t.TempDir()
	sub, file, gone := filepath.Join(dir, "sub dir"), filepath.Join(dir, "file"), filepath.Join(dir, "gone")
	os.Mkdir(sub, 0o755)
	os.WriteFile(file, nil, 0o644)
	os.WriteFile(gone, nil, 0o644)
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, w := range []struct {
		path string
		mask uint32
	}{{sub, unix.IN_CREATE}, {gone, unix.IN_ATTRIB}, {file, unix.IN_MODIFY | unix.IN_ONESHOT}} {
		if _, err := unix.InotifyAddWatch(fd, w.path, w.mask); err != nil {
			t.Fatal(err)
		}
	}
	unix.InotifyRmWatch(fd, 2)
	f := fdOf(t, fd)
	if f.Kind != image.FDInotify || image.Refusal(f) != nil {
		t.Fatalf("fd: %+v", f)
	}
	var got []string
	for _, l := range f.Extra {
		if strings.HasPrefix(l, "inotify-watch:") {
			got = append(got, l)
		}
	}
	want := []string{
		"inotify-watch: wd=1 mask=0x100 path=" + strconv.Quote(sub),
		"inotify-watch: wd=3 mask=0x80000002 path=" + strconv.Quote(file),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("watch lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A watch on procfs has no file handle that opens: refused.
	if _, err := unix.InotifyAddWatch(fd, "/proc/uptime", unix.IN_MODIFY); err != nil {
		t.Fatal(err)
	}
	f = fdOf(t, fd)
	err = checkFDs(os.Getpid(), []*image.FD{f})
	if err == nil || !strings.Contains(err.Error(), "inotify watch without a path (wd=4 ") {
		t.Fatalf("checkFDs: %v", err)
	}
}

// TestTimerfdTicks: the ticks recorded for a periodic timerfd count every
// period gone by, not just the first, and nothing is consumed.
func TestTimerfdTicks(t *testing.T) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	spec := unix.ItimerSpec{Interval: unix.Timespec{Nsec: 2e6}, Value: unix.Timespec{Nsec: 2e6}}
	if err := unix.TimerfdSettime(fd, 0, &spec, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	raw, err := proc.Read(os.Getpid(), "fdinfo/"+strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "ticks: 1\n") {
		t.Logf("the kernel's own fdinfo already counts them:\n%s", raw)
	}
	f := fdOf(t, fd)
	var ticks uint64
	for _, l := range f.Extra {
		if v, ok := strings.CutPrefix(l, "ticks: "); ok {
			ticks, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	if ticks < 20 {
		t.Fatalf("recorded %d ticks after 25 periods; fdinfo %q", ticks, f.Extra)
	}
	b := make([]byte, 8)
	if _, err := unix.Read(fd, b); err != nil {
		t.Fatal(err)
	}
	if n := binary.LittleEndian.Uint64(b); n < ticks {
		t.Fatalf("read %d expirations after recording %d", n, ticks)
	}
}
