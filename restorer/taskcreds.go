package restorer

import (
	"fmt"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/fileid"
	"github.com/ckptfs/ckptfs/internal/fscreds"
)

// Every path of a tree (files, mapped files, the exe, named FIFOs, deleted
// files, socket names) is opened, created, bound or unlinked with the file
// system credentials the restored task will have, on a thread of the
// restorer that took them (internal/fscreds): its fsuid, fsgid and groups.
// With a non-zero fsuid the thread has no CAP_DAC_OVERRIDE or other file
// system capability, so a tree (or an edited copy) that names a file its
// uid could not open gets "permission denied", whatever symlink or ".."
// leads there. This is done in the restorer rather than in the task after
// its credentials are set because the task keeps root's credentials to the
// end (clone3 with set_tid, threads, rlimits need them), one open file
// description often serves several tasks (installed with pidfd_getfd), and
// unix sockets are rebuilt together, in the restorer.

// taskCreds are the file system credentials task t will have: its fsuid,
// fsgid, groups and, where the tree records it, its effective capability
// set (a root task that dropped CAP_DAC_OVERRIDE opens without it).
func taskCreds(t *image.Task) fscreds.Creds {
	c := fscreds.Creds{UID: t.Creds.UID[3], GID: t.Creds.GID[3], Groups: t.Creds.Groups}
	for _, cs := range taskCapSets(t) { // restorercreds.go; the main thread's come first
		if cs.Name == "CapEff" {
			eff := cs.Bits
			c.Effective = &eff
			break
		}
	}
	return c
}

// credThreads keeps one fscreds.Thread per set of credentials.
type credThreads map[string]*fscreds.Thread

func credKey(c fscreds.Creds) string { return c.String() }

// as runs fn with the file system credentials of task t.
func (ct credThreads) as(t *image.Task, fn func() error) error {
	c := taskCreds(t)
	th := ct[credKey(c)]
	if th == nil {
		var err error
		if th, err = fscreds.Start(c); err != nil {
			return fmt.Errorf("task %d: %w", t.PID, err)
		}
		ct[credKey(c)] = th
	}
	return th.Do(fn)
}

func (ct credThreads) close() {
	for k, th := range ct {
		th.Close()
		delete(ct, k)
	}
}

// openAs opens path (absolute, as /proc showed it to the dumper) as task t:
// with its credentials, with openat2 and RESOLVE_NO_MAGICLINKS (a
// /proc/<pid>/fd link or the like in the path would be the restorer's),
// and for a path inside the root of a task whose root is not "/", resolved
// in that root (RESOLVE_IN_ROOT: "..", absolute symlinks the chrooted task
// may have planted stay inside it). A path outside its root (a file it
// opened before chroot, its exe) is resolved from "/". The error says who
// opened what: "open /tmp/x as uid 65534: permission denied".
func (fs *files) openAs(t *image.Task, path string, flags int, mode uint32) (int, error) {
	fd := -1
	err := fs.creds.as(t, func() error {
		var err error
		fd, err = openInRoot(t.Root, path, flags, mode)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("open %s as uid %d: %w", path, t.Creds.UID[3], err)
	}
	return fd, nil
}

// openInRoot opens path with openat2, in root if path is beneath it
// (internal/fileid: the dumper checks a task's files the same way).
func openInRoot(root, path string, flags int, mode uint32) (int, error) {
	if err := canonical(path); err != nil {
		return -1, err
	}
	return fileid.OpenInRoot(root, path, flags, mode)
}

// openat2 retries the EAGAIN that RESOLVE_IN_ROOT gives when a rename
// raced with the lookup.
func openat2(dirfd int, path string, how *unix.OpenHow) (int, error) {
	return fileid.Openat2(dirfd, path, how)
}

// canonical refuses a path that /proc could not have shown: not absolute,
// or with ".", ".." or empty components (d_path never writes them). Such a
// path comes from an edited tree.
func canonical(path string) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return fmt.Errorf("path %s is not absolute and clean (the tree was edited?)", strconv.Quote(path))
	}
	return nil
}
