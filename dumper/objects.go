package dumper

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// maxDeletedFile bounds the contents saved for a deleted-but-open file.
const maxDeletedFile = 64 << 20

// collectObjects records, once per checkpoint, the kernel objects the fds
// of the frozen tree refer to (pipes with their bytes in flight, unix
// sockets with their queued bytes and peers, deleted files with their
// contents), and marks fds that share one open file description.
func collectObjects(c *image.Checkpoint) error {
	var socks *unixTree
	for _, t := range c.Tasks {
		for _, f := range t.FDs {
			var err error
			switch {
			case f.Kind == image.FDPipe:
				err = addPipe(c, t.PID, f)
			case f.Kind == image.FDSocket:
				if socks == nil {
					if socks, err = newUnixTree(c); err != nil {
						return err
					}
				}
				err = socks.add(c, t, f) // unixsock.go
			case isMemfd(f):
				err = addMemfd(c, t.PID, f) // shm.go
			case f.Kind == image.FDFile && f.Deleted:
				err = addDeletedFile(c, t.PID, f)
			}
			if _, ok := err.(*ErrUnsupported); ok {
				return err // names pid and fd itself
			}
			if err != nil {
				return fmt.Errorf("process %d fd %d: %w", t.PID, f.Num, err)
			}
		}
	}
	if err := collectShm(c); err != nil {
		return err
	}
	return markSharedFiles(c)
}

// addPipe saves the bytes in flight of the pipe f refers to. Opening
// /proc/<pid>/fd/<n> gives a new read end of the same pipe, and tee(2)
// copies its buffer into a pipe of ours without consuming it.
func addPipe(c *image.Checkpoint, pid int, f *image.FD) error {
	id := "pipe-" + strconv.FormatUint(f.Ino, 10)
	f.Object = id
	if c.Object(id) != nil {
		return nil
	}
	src, err := os.OpenFile(proc.FDPath(pid, f.Num), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open pipe: %w", err)
	}
	defer src.Close()
	size, err := unix.FcntlInt(src.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return fmt.Errorf("pipe size: %w", err)
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return err
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, size); err != nil {
		return fmt.Errorf("size our pipe: %w", err)
	}
	var data []byte
	n, err := unix.Tee(int(src.Fd()), p[1], size, unix.SPLICE_F_NONBLOCK)
	if err == unix.EAGAIN {
		n = 0 // empty pipe
	} else if err != nil {
		return fmt.Errorf("tee pipe: %w", err)
	}
	data = make([]byte, n)
	for got := 0; got < int(n); {
		k, err := unix.Read(p[0], data[got:])
		if err != nil || k == 0 {
			return fmt.Errorf("read teed bytes: %v", err)
		}
		got += k
	}
	c.Objects = append(c.Objects, &image.Object{ID: id, Kind: image.ObjPipe, Data: data,
		Info: []string{"ino: " + strconv.FormatUint(f.Ino, 10), "capacity: " + strconv.Itoa(size)}})
	return nil
}

// addDeletedFile saves the contents of an unlinked file that is still open.
func addDeletedFile(c *image.Checkpoint, pid int, f *image.FD) error {
	id := "file-" + strconv.FormatUint(f.Ino, 10)
	f.Object = id
	if c.Object(id) != nil {
		return nil
	}
	if f.Size > maxDeletedFile {
		return &ErrUnsupported{PID: pid, FD: f.Num, Kind: fmt.Sprintf("a deleted file larger than %d MiB", maxDeletedFile>>20), What: f.Path}
	}
	data, err := os.ReadFile(proc.FDPath(pid, f.Num))
	if err != nil {
		return fmt.Errorf("read deleted file: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(proc.FDPath(pid, f.Num), &st); err != nil {
		return err
	}
	c.Objects = append(c.Objects, &image.Object{ID: id, Kind: image.ObjDeletedFile, Data: data,
		Info: []string{image.TextLine("path", f.Path), "mode: " + strconv.FormatUint(uint64(st.Mode&0o7777), 8)}})
	return nil
}

// markSharedFiles gives fds that are the same open file description (kcmp)
// the same OFD id, so a restore shares their offset again.
//
// Only fds of one inode, one access mode (which a description never
// changes) and one recorded offset can be one description; kcmp sorts
// each such run, so the fds sharing a description come out adjacent:
// O(n log n) kcmp calls for the fds of a run, none for an fd alone in
// its run (10,000 opens of one file compared pairwise took 41 s). The
// offsets were read one fd after another, though, and a process outside
// the frozen tree sharing a description may move its offset meanwhile: so
// where one inode and access mode gives several runs, the offsets are read
// again, and if any moved, the whole group is sorted by kcmp alone.
func markSharedFiles(c *image.Checkpoint) error {
	type key struct {
		ino    uint64
		access uint32
	}
	groups := map[key][]fdRef{}
	var keys []key // in tree order, so OFD ids do not depend on map order
	for _, t := range c.Tasks {
		for _, f := range t.FDs {
			if f.Ino == 0 {
				continue
			}
			k := key{f.Ino, f.Flags & unix.O_ACCMODE}
			if groups[k] == nil {
				keys = append(keys, k)
			}
			groups[k] = append(groups[k], fdRef{t.PID, f})
		}
	}
	dirs := map[int]*fdDirs{}
	defer func() {
		for _, d := range dirs {
			d.close()
		}
	}()
	n := 0
	for _, k := range keys {
		refs := groups[k]
		if len(refs) < 2 {
			continue
		}
		slices.SortStableFunc(refs, func(a, b fdRef) int { return cmp.Compare(a.fd.Pos, b.fd.Pos) })
		runs := posRuns(refs)
		if len(runs) > 1 {
			moved, err := offsetsMoved(refs, dirs)
			if err != nil {
				return err
			}
			if moved {
				runs = [][]fdRef{refs}
			}
		}
		for _, run := range runs {
			if len(run) < 2 {
				continue
			}
			if err := sortByDescription(run); err != nil {
				return err
			}
			for i := 1; i < len(run); i++ {
				a, b := run[i-1], run[i]
				same, err := ptrace.SameFile(a.pid, a.fd.Num, b.pid, b.fd.Num)
				if err != nil {
					return fmt.Errorf("kcmp %d/%d %d/%d: %w", a.pid, a.fd.Num, b.pid, b.fd.Num, err)
				}
				if !same {
					continue
				}
				if a.fd.OFD == "" {
					n++
					a.fd.OFD = "ofd-" + strconv.Itoa(n)
				}
				b.fd.OFD = a.fd.OFD
			}
		}
	}
	return nil
}

// fdRef is one fd of one process.
type fdRef struct {
	pid int
	fd  *image.FD
}

// posRuns cuts refs, sorted by recorded offset, into runs of one offset.
func posRuns(refs []fdRef) [][]fdRef {
	var runs [][]fdRef
	for i := 0; i < len(refs); {
		j := i + 1
		for j < len(refs) && refs[j].fd.Pos == refs[i].fd.Pos {
			j++
		}
		runs = append(runs, refs[i:j])
		i = j
	}
	return runs
}

// offsetsMoved reads the offsets of refs again and says whether any moved
// since they were recorded.
func offsetsMoved(refs []fdRef, dirs map[int]*fdDirs) (bool, error) {
	for _, r := range refs {
		d := dirs[r.pid]
		if d == nil {
			var err error
			if d, err = openFDDirs(r.pid); err != nil {
				return false, err
			}
			dirs[r.pid] = d
		}
		pos, err := d.pos(r.fd.Num)
		if err != nil {
			return false, err
		}
		if pos != r.fd.Pos {
			return true, nil
		}
	}
	return false, nil
}

// sortByDescription sorts refs by kcmp's order of their open file
// descriptions.
func sortByDescription(refs []fdRef) error {
	var kcmpErr error
	slices.SortFunc(refs, func(a, b fdRef) int {
		o, err := ptrace.CompareFile(a.pid, a.fd.Num, b.pid, b.fd.Num)
		if err != nil && kcmpErr == nil {
			kcmpErr = fmt.Errorf("kcmp %d/%d %d/%d: %w", a.pid, a.fd.Num, b.pid, b.fd.Num, err)
		}
		return o
	})
	return kcmpErr
}
