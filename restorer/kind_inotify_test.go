package restorer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// TestInotifyWds: watches come back at their recorded wds across gaps,
// with their masks, no events of the skipped watches are left queued, and
// the next watch gets the number after the highest.
func TestInotifyWds(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b b"), filepath.Join(dir, "c")
	os.Mkdir(a, 0o755)
	os.WriteFile(b, nil, 0o644)
	os.WriteFile(c, nil, 0o644)
	f := &image.FD{Num: 3, Kind: image.FDInotify, Path: "anon_inode:inotify", Extra: []string{
		"inotify wd:9 ino:1 sdev:0 mask:2 ignored_mask:0", // the kernel's own line: ignored
		"inotify-watch: wd=9 mask=0x80000002 path=" + strconv.Quote(c),
		"inotify-watch: wd=1 mask=0x100 path=" + strconv.Quote(a),
		"inotify-watch: wd=4 mask=0x2 path=" + strconv.Quote(b),
	}}
	fs := newFiles(nil)
	defer fs.close()
	fd, err := fs.inotify(&image.Task{}, f)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", fd))
	for _, want := range []string{"inotify wd:1 ", "mask:100 ", "inotify wd:4 ", "inotify wd:9 ", "mask:80000002 ", "flags:\t02000000\n"} {
		if !strings.Contains(string(info), want) {
			t.Errorf("fdinfo lacks %q:\n%s", want, info)
		}
	}
	if strings.Count(string(info), "inotify wd:") != 3 {
		t.Errorf("fdinfo has other watches:\n%s", info)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := unix.Read(fd, buf); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("events left queued (err %v)", err)
	}
	os.WriteFile(b, []byte("x"), 0o644)
	n, err := unix.Read(fd, buf)
	if err != nil || n < 16 || int32(binary.LittleEndian.Uint32(buf)) != 4 || binary.LittleEndian.Uint32(buf[4:])&unix.IN_MODIFY == 0 {
		t.Fatalf("event after a write to %s: %x, %v", b, buf[:max(n, 0)], err)
	}
	if next, err := unix.InotifyAddWatch(fd, dir, unix.IN_ATTRIB); err != nil || next != 10 {
		t.Fatalf("next watch got wd %d, %v; want 10", next, err)
	}
}

func TestInotifyErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		line, want string
	}{
		{"inotify-watch: wd=1 mask=0x2 path=" + strconv.Quote(filepath.Join(dir, "missing")), "watched path " + filepath.Join(dir, "missing") + ": no such file"},
		{"inotify-watch: wd=1 mask=0x2", "bad inotify watch line"},
		{"inotify-watch: wd=x mask=0x2 path=\"/\"", "bad inotify watch line"},
		{"inotify-watch: wd=0 mask=0x2 path=\"/\"", "bad inotify watch line"},
	} {
		f := &image.FD{Num: 3, Kind: image.FDInotify, Extra: []string{c.line}}
		fs := newFiles(nil)
		_, err := fs.inotify(&image.Task{}, f)
		fs.close()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.line, err, c.want)
		}
	}
	// Two watches on one inode cannot both get their wds back.
	f := &image.FD{Num: 3, Kind: image.FDInotify, Extra: []string{
		"inotify-watch: wd=1 mask=0x2 path=" + strconv.Quote(dir), "inotify-watch: wd=2 mask=0x2 path=" + strconv.Quote(dir)}}
	fs := newFiles(nil)
	defer fs.close()
	if _, err := fs.inotify(&image.Task{}, f); err == nil || !strings.Contains(err.Error(), "got wd 1, want 2") {
		t.Errorf("same inode twice: %v", err)
	}
}
