package restorer

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// TestOpenInRoot: paths inside a recorded root resolve inside it (an
// absolute symlink there does not lead out), magic links are refused,
// paths that /proc would not show are refused.
func TestOpenInRoot(t *testing.T) {
	jail := t.TempDir()
	if err := os.MkdirAll(filepath.Join(jail, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(jail, "etc", "passwd"), []byte("jail's"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(jail, "link")); err != nil {
		t.Fatal(err)
	}
	read := func(root, path string) (string, error) {
		fd, err := openInRoot(root, path, unix.O_RDONLY, 0)
		if err != nil {
			return "", err
		}
		defer unix.Close(fd)
		b := make([]byte, 64)
		n, _ := unix.Read(fd, b)
		return string(b[:n]), nil
	}
	if got, err := read(jail, filepath.Join(jail, "link")); err != nil || got != "jail's" {
		t.Errorf("symlink to /etc/passwd inside the root: %q %v, want the root's own /etc/passwd", got, err)
	}
	if got, err := read("/", filepath.Join(jail, "link")); err != nil || got == "jail's" {
		t.Errorf("the same symlink with root /: %q %v", got, err)
	}
	// Outside its root (opened before chroot): resolved from /.
	if _, err := read(jail, "/etc/hostname"); err != nil && !errors.Is(err, unix.ENOENT) {
		t.Errorf("a path outside the root: %v", err)
	}
	fd, err := unix.Open(jail, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := read("/", "/proc/self/fd/"+strconv.Itoa(fd)+"/etc/passwd"); !errors.Is(err, unix.ELOOP) {
		t.Errorf("through /proc/self/fd: %v, want ELOOP", err)
	}
	for _, bad := range []string{"/tmp/../etc/passwd", "etc/passwd", "/etc//passwd", "/etc/./passwd", ""} {
		if _, err := read("/", bad); err == nil || !strings.Contains(err.Error(), "is not absolute and clean") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestOpenAsNobody: the open error names the uid and the path; a task of
// uid 0 opens a root-only file.
func TestOpenAsNobody(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: takes uid 65534's file system credentials")
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fs := newFiles(nil)
	defer fs.close()
	nobody := &image.Task{PID: 1234, Root: "/", Creds: image.Creds{UID: [4]int{65534, 65534, 65534, 65534}, GID: [4]int{65534, 65534, 65534, 65534}}}
	_, err := fs.openAs(nobody, secret, unix.O_RDONLY, 0)
	if want := "open " + secret + " as uid 65534: permission denied"; err == nil || err.Error() != want {
		t.Errorf("open as 65534: %v, want %q", err, want)
	}
	root := &image.Task{PID: 1, Root: "/"}
	fd, err := fs.openAs(root, secret, unix.O_RDONLY, 0)
	if err != nil {
		t.Errorf("open as 0: %v", err)
	} else {
		unix.Close(fd)
	}
}

// TestCheckRoot: a non-root task is chrooted only into directories that
// only root can write to.
func TestCheckRoot(t *testing.T) {
	dir := t.TempDir() // under /tmp: writable by everyone
	user := image.Creds{UID: [4]int{1000, 1000, 1000, 1000}}
	if err := checkRoot(&image.Task{PID: 5, Root: dir, Creds: user}); err == nil || !strings.Contains(err.Error(), "is not a directory owned by root and writable only by root") {
		t.Errorf("root under /tmp for uid 1000: %v", err)
	}
	if err := checkRoot(&image.Task{PID: 5, Root: dir}); err != nil {
		t.Errorf("uid 0: %v", err)
	}
	if err := checkRoot(&image.Task{PID: 5, Root: "/usr", Creds: user}); err != nil {
		t.Errorf("/usr for uid 1000: %v", err)
	}
}

// TestSysVTakeOverOwner: an existing segment is taken over only for tasks
// that own or created it, or are root.
func TestSysVTakeOverOwner(t *testing.T) {
	ds := &unix.SysvShmDesc{Segsz: 4096}
	ds.Perm.Key, ds.Perm.Uid, ds.Perm.Cuid = 7, 1000, 1000
	task := func(uid int) *image.Task {
		return &image.Task{PID: 9, Creds: image.Creds{UID: [4]int{uid, uid, uid, uid}}}
	}
	s := &sysvSeg{id: 3, key: 7, size: 4096}
	for _, tc := range []struct {
		uid int
		ok  bool
	}{{1000, true}, {0, true}, {65534, false}} {
		s.users = []*image.Task{task(tc.uid)}
		err := s.takeOver(ds)
		if tc.ok != (err == nil) {
			t.Errorf("uid %d: %v", tc.uid, err)
		}
		if err != nil && !strings.Contains(err.Error(), "shmid 3 exists, owned by uid 1000: task 9 (uid 65534) may not take it over") {
			t.Errorf("message: %v", err)
		}
	}
}

// TestFIFOAsTask: a named FIFO is opened only if every fd on it could be
// opened, with its access mode, by its own task: a root-owned 0644 FIFO
// is fine for a uid-65534 reader, refused for a uid-65534 writer.
func TestFIFOAsTask(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: takes uid 65534's file system credentials")
	}
	dir := t.TempDir()
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil { // t.TempDir's parent is 0700
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	nobody := image.Creds{UID: [4]int{65534, 65534, 65534, 65534}, GID: [4]int{65534, 65534, 65534, 65534}}
	for _, tc := range []struct {
		flags uint32
		want  string
	}{
		{unix.O_RDONLY, ""},
		{unix.O_WRONLY, "task 8 fd 5: named FIFO " + path + " as uid 65534: permission denied"},
	} {
		o := &image.Object{ID: "pipe-1", Kind: image.ObjPipe, Info: (&image.Pipe{Ino: 1}).Info()}
		c := &image.Checkpoint{Objects: []*image.Object{o}, Tasks: []*image.Task{
			{PID: 7, FDs: []*image.FD{{Num: 4, Kind: image.FDPipe, Path: path, Object: o.ID, Flags: unix.O_RDWR}}},
			{PID: 8, Creds: nobody, FDs: []*image.FD{{Num: 5, Kind: image.FDPipe, Path: path, Object: o.ID, Flags: tc.flags}}},
		}}
		fs := newFiles(nil)
		_, err := fs.pipe(c, o)
		fs.close()
		if tc.want == "" && err != nil {
			t.Errorf("flags %o: %v", tc.flags, err)
		}
		if tc.want != "" && (err == nil || err.Error() != tc.want) {
			t.Errorf("flags %o: %v, want %q", tc.flags, err, tc.want)
		}
	}
}

// TestOpenAsRootWithoutDACOverride: a task of uid 0 whose recorded CapEff
// lacks CAP_DAC_OVERRIDE opens as it would, without it.
func TestOpenAsRootWithoutDACOverride(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, nil, 0o000); err != nil {
		t.Fatal(err)
	}
	defer func(f func(*image.Task) []capSet) { taskCapSets = f }(taskCapSets)
	taskCapSets = func(*image.Task) []capSet {
		return []capSet{{"CapEff", ^uint64(0) &^ (1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_DAC_READ_SEARCH)}}
	}
	fs := newFiles(nil)
	defer fs.close()
	_, err := fs.openAs(&image.Task{PID: 3, Root: "/"}, secret, unix.O_RDONLY, 0)
	if !errors.Is(err, unix.EACCES) {
		t.Errorf("open a mode 000 file as root without CAP_DAC_OVERRIDE: %v, want EACCES", err)
	}
}

// TestBindAsNobody: a uid-65534 task's listener is bound as 65534: in its
// own directory the socket file is 65534's with the recorded mode; in a
// directory only root may write to, the bind is refused.
func TestBindAsNobody(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: takes uid 65534's file system credentials")
	}
	base := t.TempDir()
	if err := os.Chmod(filepath.Dir(base), 0o711); err != nil { // t.TempDir's parent is 0700
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	own := filepath.Join(base, "own")
	if err := os.Mkdir(own, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(own, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	nobody := image.Creds{UID: [4]int{65534, 65534, 65534, 65534}, GID: [4]int{65534, 65534, 65534, 65534}}
	build := func(name string) error {
		o := unixObj("unix-1", "type: 1", "state: 10", "peer: 0", image.TextLine("name", name), "backlog: 5", "file: yes", "mode: 600", "uid: 65534", "gid: 65534")
		c := &image.Checkpoint{Objects: []*image.Object{o},
			Tasks: []*image.Task{{PID: 6, Root: "/", Creds: nobody, FDs: []*image.FD{{Kind: image.FDSocket, Object: o.ID}}}}}
		fs := newFiles(nil)
		defer fs.close()
		_, err := fs.socket(c, o)
		return err
	}
	sock := filepath.Join(own, "sock")
	if err := build(sock); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(sock, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 65534 || st.Gid != 65534 || st.Mode&0o777 != 0o600 {
		t.Errorf("socket file %d:%d mode %o, want 65534:65534 0600", st.Uid, st.Gid, st.Mode&0o777)
	}
	err := build(filepath.Join(base, "sock"))
	if err == nil || !strings.Contains(err.Error(), "as uid 65534: bind "+filepath.Join(base, "sock")+": permission denied") {
		t.Errorf("bind in a root-only directory: %v", err)
	}
}

// TestFIFONotAFIFO: a named FIFO path that now names another kind of file
// is refused before that file is opened.
func TestFIFONotAFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "regular")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	o := &image.Object{ID: "pipe-1", Kind: image.ObjPipe, Info: (&image.Pipe{Ino: 1}).Info()}
	c := &image.Checkpoint{Objects: []*image.Object{o}, Tasks: []*image.Task{
		{PID: 7, FDs: []*image.FD{{Num: 4, Kind: image.FDPipe, Path: path, Object: o.ID, Flags: unix.O_RDWR}}}}}
	fs := newFiles(nil)
	defer fs.close()
	if _, err := fs.pipe(c, o); err == nil || !strings.Contains(err.Error(), "not a FIFO but file type 0100000") {
		t.Errorf("FIFO path naming a regular file: %v", err)
	}
}
