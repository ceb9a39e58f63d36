package dumper

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/ckptfs/ckptfs/internal/proc"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// An inotify fd's watches are the kernel's fdinfo lines
//
//	inotify wd:3 ino:9a60d2 sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:d2609a002e99f858
//
// (numbers in hex). Each watch is resolved to a path at dump time by
// opening its file handle on a mount of its device, and recorded typed
// (image.Inotify). A watch that cannot be resolved (its file was deleted,
// or the file system cannot open handles) is recorded as unresolved, and
// image.Refusal refuses it (checkFDs).

// inotifyWatch is one watch of an inotify fd, as its fdinfo line says.
type inotifyWatch struct {
	wd      int
	ino     uint64
	dev     uint64 // the kernel's s_dev: major<<20 | minor
	mask    uint32
	htype   int32
	handle  []byte
	path    string // resolved; "" if it could not be
	problem string // why it could not be resolved
}

// parseInotifyLine parses one "inotify wd:..." fdinfo line.
func parseInotifyLine(line string) (*inotifyWatch, error) {
	rest, ok := strings.CutPrefix(line, "inotify ")
	if !ok {
		return nil, fmt.Errorf("not an inotify line: %q", line)
	}
	w := &inotifyWatch{htype: -1}
	for _, f := range strings.Fields(rest) {
		k, v, _ := strings.Cut(f, ":")
		var err error
		var n uint64
		switch k {
		case "wd", "ino", "sdev", "mask", "fhandle-type":
			n, err = strconv.ParseUint(v, 16, 64)
		case "f_handle":
			w.handle, err = hex.DecodeString(v)
		}
		if err != nil {
			return nil, fmt.Errorf("inotify fdinfo %s in %q: %w", k, line, err)
		}
		switch k {
		case "wd":
			w.wd = int(n)
		case "ino":
			w.ino = n
		case "sdev":
			w.dev = n
		case "mask":
			w.mask = uint32(n)
		case "fhandle-type":
			w.htype = int32(n)
		}
	}
	if w.wd <= 0 {
		return nil, fmt.Errorf("inotify fdinfo line without a wd: %q", line)
	}
	return w, nil
}

// inotifyKind is an inotify instance: its watches, each resolved to a
// path at dump time.
type inotifyKind struct{ noOps }

func (inotifyKind) fdKind() string { return image.FDInotify }
func (inotifyKind) classifies(link string, _ uint32) bool {
	return link == "anon_inode:inotify"
}
func (inotifyKind) owns(*image.FD) bool { return true }

// dump resolves the watches of inotify fd f (the kernel's "inotify wd:"
// lines in f.Extra) and replaces those lines by the typed ones, in
// ascending wd order; a watch without a path is an unresolved line, which
// image.Refusal refuses.
func (inotifyKind) dump(_ int, f *image.FD) error {
	var ws []*inotifyWatch
	for _, line := range f.Extra {
		if !strings.HasPrefix(line, "inotify ") {
			continue
		}
		w, err := parseInotifyLine(line)
		if err != nil {
			return err
		}
		ws = append(ws, w)
	}
	var n image.Inotify
	if len(ws) > 0 {
		mounts, err := mountsByDev()
		if err != nil {
			return err
		}
		// The kernel lists the newest watch first.
		for i := len(ws) - 1; i >= 0; i-- {
			w := ws[i]
			w.resolve(mounts)
			if w.path == "" {
				n.Unresolved = append(n.Unresolved, fmt.Sprintf("wd=%d ino=%d %s", w.wd, w.ino, w.problem))
				continue
			}
			n.Watches = append(n.Watches, image.InotifyWatch{WD: w.wd, Mask: w.mask, Path: w.path})
		}
	}
	f.Extra = append(commonLines(f), n.Lines()...)
	return nil
}

// resolve finds the path of w's inode: its file handle opened on a mount
// of its device, read back through /proc/self/fd and checked to lead to
// the same inode again.
func (w *inotifyWatch) resolve(mounts map[uint64][]string) {
	if w.handle == nil || w.htype < 0 {
		w.problem = "no file handle"
		return
	}
	w.problem = "no mount of its device"
	for _, mnt := range mounts[w.dev] {
		if p, err := openHandlePath(mnt, w.htype, w.handle, w.ino); err != nil {
			w.problem = err.Error()
		} else {
			w.path = p
			return
		}
	}
}

func openHandlePath(mnt string, htype int32, handle []byte, ino uint64) (string, error) {
	mfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open mount %s: %w", mnt, err)
	}
	defer unix.Close(mfd)
	fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(htype, handle), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("open_by_handle_at on %s: %w", mnt, err)
	}
	defer unix.Close(fd)
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", err
	}
	var have, named unix.Stat_t
	if err := unix.Fstat(fd, &have); err != nil {
		return "", err
	}
	switch {
	case strings.HasSuffix(p, " (deleted)"):
		return "", fmt.Errorf("the watched file was deleted (%s)", p)
	case !strings.HasPrefix(p, "/") || strings.ContainsRune(p, '\n'):
		return "", fmt.Errorf("no usable path (%q)", p)
	case unix.Lstat(p, &named) != nil || named.Ino != have.Ino || named.Dev != have.Dev || have.Ino != ino:
		return "", fmt.Errorf("%s is not the watched inode", p)
	}
	return p, nil
}

// mountsByDev maps the kernel's s_dev (major<<20|minor) to mount points of
// that device in the dumper's mount namespace, mounts of the device's root
// first (their paths lead anywhere on it).
func mountsByDev() (map[uint64][]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[uint64][]string{}
	var rest []struct {
		dev uint64
		mnt string
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		maj, min, ok := strings.Cut(fs[2], ":")
		ma, err1 := strconv.ParseUint(maj, 10, 32)
		mi, err2 := strconv.ParseUint(min, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			continue
		}
		dev := ma<<20 | mi
		mnt := proc.UnescapeMountinfo(fs[4])
		if fs[3] == "/" {
			out[dev] = append(out[dev], mnt)
		} else {
			rest = append(rest, struct {
				dev uint64
				mnt string
			}{dev, mnt})
		}
	}
	for _, r := range rest {
		out[r.dev] = append(out[r.dev], r.mnt)
	}
	return out, sc.Err()
}
