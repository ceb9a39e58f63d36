package restorer

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/fileid"
)

// A task may hold a file it could not open itself: postgres run as nobody
// whose stderr is a root-owned 0600 log that root's shell opened before
// the setuid. Restore opens every file as its task (taskcreds.go), so that
// a name in a tree never decides what root opens; for such a file that
// open is refused. The restorer then opens it with its own credentials,
// but only the very file the task had open when it was dumped:
//
//   - the identity (device, inode, file handle: image.FileID) is taken from
//     the store, not from the tree: from the checkpoint the store served
//     (storemodel.go), or, when the tree was loaded from the mount's files,
//     from the store's own copy of the same checkpoint, whose task and fd
//     must agree with the tree's. A copy of a tree (not on a mount of a
//     store) is refused: anyone who can write it could name another file
//     with that file's identity;
//   - the path is resolved once, without following any symlink
//     (RESOLVE_NO_SYMLINKS, O_NOFOLLOW, and RESOLVE_IN_ROOT in a chrooted
//     task's root), to an O_PATH fd whose device, inode and handle must be
//     the recorded ones; that inode is then opened through the fd
//     (internal/fileid.OpenSame).
//
// So the task gets back exactly the file it held, and nothing a path
// swapped since could lead to. Anything else is refused, naming the fd,
// the path and why, and pointing at --inherit-fd fd[N]:PATH.

// errNotFromStore says a tree's record of a file cannot be believed.
var errNotFromStore = errors.New("the checkpoint was not read from its store (a copy of a tree): its record of the file cannot be trusted")

// storeIDs returns where the restorer takes the recorded identity of a
// file from: c itself if the store served it, else the store's copy of c
// (fetched once, when first needed), else nowhere.
func storeIDs(c *image.Checkpoint, sp *storePages) func(t *image.Task, f *image.FD) (fileid.ID, error) {
	if sp == nil {
		return func(*image.Task, *image.FD) (fileid.ID, error) { return fileid.ID{}, errNotFromStore }
	}
	if sp.tree != nil {
		return func(_ *image.Task, f *image.FD) (fileid.ID, error) { return recordedID(f) }
	}
	var sc *image.Checkpoint
	var loadErr error
	return func(t *image.Task, f *image.FD) (fileid.ID, error) {
		if sc == nil && loadErr == nil {
			if sc, loadErr = sp.client.Load(c.ID); loadErr == nil && sc.ID != c.ID {
				loadErr = fmt.Errorf("store %s gave checkpoint %q for %q", sp.store, sc.ID, c.ID)
			}
		}
		if loadErr != nil {
			return fileid.ID{}, fmt.Errorf("its record of the file must come from the store: %w", loadErr)
		}
		st := sc.Task(t.PID)
		if st == nil || st.Creds.UID != t.Creds.UID || st.Creds.GID != t.Creds.GID || !slices.Equal(st.Creds.Groups, t.Creds.Groups) || st.Exe != t.Exe {
			return fileid.ID{}, fmt.Errorf("the tree's task %d is not the store's task %d of checkpoint %s", t.PID, t.PID, c.ID)
		}
		for _, g := range st.FDs {
			if g.Num == f.Num {
				if g.Kind != f.Kind || g.Path != f.Path || g.Flags != f.Flags || g.Ino != f.Ino {
					return fileid.ID{}, fmt.Errorf("the tree's fd %d is not the store's fd %d of checkpoint %s", f.Num, f.Num, c.ID)
				}
				return recordedID(g)
			}
		}
		return fileid.ID{}, fmt.Errorf("the store's task %d of checkpoint %s has no fd %d", t.PID, c.ID, f.Num)
	}
}

// recordedID is the identity fd f records (FileID lines and its ino).
func recordedID(f *image.FD) (fileid.ID, error) {
	id, err := image.ParseFileID(f, false)
	if err != nil {
		return fileid.ID{}, err
	}
	if id.Handle == "" {
		return fileid.ID{}, errors.New("the checkpoint records no file handle for it (its file system gives none, or an older dump)")
	}
	return fileid.ID{Dev: id.Dev, Ino: f.Ino, Handle: id.Handle}, nil
}

// openDumpedFile opens regular file fd f of task t with the restorer's own
// credentials, if it is the file the task had open at dump time (above).
func (fs *files) openDumpedFile(t *image.Task, f *image.FD) (int, error) {
	if f.Kind != image.FDFile || f.Object != "" {
		return -1, errors.New("only a regular file is opened with the restorer's credentials")
	}
	if fs.ids == nil {
		return -1, errNotFromStore
	}
	want, err := fs.ids(t, f)
	if err != nil {
		return -1, err
	}
	if err := canonical(f.Path); err != nil {
		return -1, err
	}
	dirfd, path, resolve, done, err := fileid.InRoot(t.Root, f.Path)
	if err != nil {
		return -1, err
	}
	defer done()
	fd, err := fileid.OpenSame(dirfd, path, resolve, int(f.Flags&reopenMask), want)
	if err != nil {
		return -1, err
	}
	fs.keep(fd)
	if f.Pos != 0 {
		if _, err := unix.Seek(fd, f.Pos, 0); err != nil {
			return -1, fmt.Errorf("seek %s: %w", f.Path, err)
		}
	}
	return fd, nil
}

// notOwnFileHint is what a refused file's error suggests.
func notOwnFileHint(f *image.FD) string {
	return fmt.Sprintf("restore from a mount of the store the dump wrote (MNT/ID), or hand the file in: --inherit-fd fd[N]:%s with N an fd of restore open on it", f.Path)
}
