package dumper

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// collection is the state of one collectObjects: the checkpoint, and what
// a kind reads once for all its fds (sock_diag's unix sockets).
type collection struct {
	c     *image.Checkpoint
	socks *unixTree // kind_unixsock.go, read on first use
	tcp   *tcpHold  // kind_tcp.go: connections put in repair mode
}

// collectObjects records, once per checkpoint, the kernel objects the fds
// of the frozen tree refer to (each kind's collect: pipes with their bytes
// in flight, unix sockets with their queued bytes and peers, memfds,
// deleted files with their contents), then the shared memory the vmas map
// (collectShm), and marks fds that share one open file description.
func collectObjects(c *image.Checkpoint, tcp *tcpHold) error {
	cc := &collection{c: c, tcp: tcp}
	for _, t := range c.Tasks {
		for _, f := range t.FDs {
			err := kindOf(f).collect(cc, t, f)
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
