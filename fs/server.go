package fs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/ckptfs/ckptfs/internal/proc"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Options tune a mount.
type Options struct {
	// Render builds a checkpoint's tree; nil means image.Render.
	Render RenderFunc
	// Debug logs every FUSE request.
	Debug bool
	// Logf, if set, receives the errors that readers only see as EIO
	// (a checkpoint that fails to load, a page missing or corrupt).
	Logf func(format string, args ...any)

	// storeDir is the store Mount serves: the mount's source is then
	// SourcePrefix + storeDir (see SourcePrefix).
	storeDir string
}

// SourcePrefix starts the source (mountinfo's "mount source", df's
// Filesystem) of a mount of a local store, followed by the store
// directory: a restorer reading a tree below the mount finds the store's
// socket from it (restorer/pagesource.go). A mount of another Repo has
// source "ckptfs".
const SourcePrefix = "ckptfs:"

// maxIO is the largest read the kernel sends us (max_read, max_pages).
// readahead is the kernel's readahead window for the mount: several maxIO
// requests in flight keep both the kernel and our goroutines busy (measured:
// 128 KiB 1.1 GB/s, 1 MiB 2.0 GB/s, 4 MiB 2.2 GB/s cold sequential reads).
const (
	maxIO     = 1 << 20
	readahead = 4 << 20
)

// Server is a mounted ckptfs.
type Server struct {
	srv        *fuse.Server
	root       *root
	mountpoint string

	closeOnce sync.Once
	onClose   func() error // after the kernel let go: stop serving the store, close it
	closeErr  error
}

// MountRepo mounts repo at mountpoint, read-only and for the calling user
// only. The mountpoint must be an existing directory that is not a mount
// point already.
func MountRepo(repo Repo, mountpoint string, opts Options) (*Server, error) {
	mnt, err := checkMountpoint(mountpoint)
	if err != nil {
		return nil, err
	}
	render := opts.Render
	if render == nil {
		render = defaultRender
	}
	if render == nil {
		return nil, errors.New("mount: no renderer")
	}
	r := newRoot(repo, render, opts.Logf)
	r.refresh(true)
	if r.err != nil {
		return nil, fmt.Errorf("mount: list checkpoints: %w", r.err)
	}
	source := "ckptfs"
	if opts.storeDir != "" {
		source = SourcePrefix + opts.storeDir
	}
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	// Private to the mounting user: never allow_other (nor allow_root),
	// so the kernel refuses every process of another uid or gid before a
	// request reaches us; the mount shows memory and environments of the
	// dumped programs (docs/security.md, tests/storetrust_test.go).
	fo := &gofs.Options{
		MountOptions: fuse.MountOptions{
			FsName:               source,
			Name:                 "ckptfs",
			Options:              []string{"ro", "default_permissions"},
			DirectMount:          true,
			DirectMountFlags:     unix.MS_NOSUID | unix.MS_NODEV | unix.MS_RDONLY,
			MaxWrite:             maxIO,
			MaxReadAhead:         maxIO,
			MaxBackground:        64,
			DisableXAttrs:        true,
			DisableSplice:        true, // replies are in our buffers: splice would add a copy
			IgnoreSecurityLabels: true,
			Debug:                opts.Debug,
		},
		UID:             uid,
		GID:             gid,
		RootStableAttr:  &gofs.StableAttr{Ino: inoRoot},
		NullPermissions: true,
	}
	srv, err := gofs.Mount(mnt, r, fo)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", mnt, err)
	}
	r.live.Store(true)
	setReadahead(mnt, readahead)
	return &Server{srv: srv, root: r, mountpoint: mnt}, nil
}

// Mountpoint is the absolute path of the mount.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Notify re-reads the list of checkpoints and updates the mount (new
// checkpoints appear, removed ones vanish).
func (s *Server) Notify() { s.root.Notify() }

// ErrBusy says the mount is in use: Unmount detached it, and it goes away
// when its last user lets go (Wait returns then).
var ErrBusy = errors.New("mount is busy")

// Unmount unmounts and releases the store. If the mount is in use it
// detaches it (it vanishes from the file tree at once, and is served until
// its last user lets go) and returns an error wrapping ErrBusy; Wait then
// returns once it is gone.
func (s *Server) Unmount() error {
	err := unix.Unmount(s.mountpoint, 0)
	switch {
	case err == nil:
		return s.Wait()
	case errors.Is(err, unix.EBUSY):
		if derr := unix.Unmount(s.mountpoint, unix.MNT_DETACH); derr != nil {
			return fmt.Errorf("unmount %s: %w", s.mountpoint, derr)
		}
		return fmt.Errorf("unmount %s: %w: detached, it goes away when the last user lets go", s.mountpoint, ErrBusy)
	case errors.Is(err, unix.EINVAL):
		// Not mounted (any more): umount(8) was faster.
		return s.Wait()
	}
	// Not allowed to unmount ourselves (not root): fusermount -u.
	if ferr := s.srv.Unmount(); ferr != nil {
		return fmt.Errorf("unmount %s: %w", s.mountpoint, ferr)
	}
	return s.Wait()
}

// Wait blocks until the file system is unmounted (by Unmount or umount(8))
// and the store is released.
func (s *Server) Wait() error {
	s.srv.Wait()
	return s.finish()
}

func (s *Server) finish() error {
	s.closeOnce.Do(func() {
		s.root.live.Store(false)
		if s.onClose != nil {
			s.closeErr = s.onClose()
		}
	})
	return s.closeErr
}

// checkMountpoint returns the absolute, symlink-free mountpoint or says
// what is wrong with it.
func checkMountpoint(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	st, err := os.Stat(abs)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("mountpoint %s does not exist", dir)
	}
	if err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("mountpoint %s is not a directory", dir)
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return "", fmt.Errorf("mountpoint %s: %w", dir, err)
	}
	mounted, err := isMountpoint(abs)
	if err != nil {
		return "", err
	}
	if mounted {
		return "", fmt.Errorf("mountpoint %s is already a mount point (unmount it first: umount %s)", dir, abs)
	}
	return abs, nil
}

// isMountpoint reports whether dir (absolute, clean) is the mount point of
// a mount in this mount namespace.
func isMountpoint(dir string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && proc.UnescapeMountinfo(fields[4]) == dir {
			return true, nil
		}
	}
	return false, sc.Err()
}

// within reports whether path is dir or below it (both absolute and clean).
func within(path, dir string) bool {
	if path == dir {
		return true
	}
	if dir == "/" {
		return true
	}
	return strings.HasPrefix(path, dir+string(filepath.Separator))
}

// setReadahead raises the kernel's readahead for the mount (the bdi of its
// device) to n bytes, so that buffered sequential reads reach us as large
// requests; the kernel's INIT offers only 128 KiB. Best effort: it needs
// root.
func setReadahead(mnt string, n int) {
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	os.WriteFile(p, []byte(strconv.Itoa(n>>10)), 0)
}
