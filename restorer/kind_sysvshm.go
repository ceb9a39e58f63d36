package restorer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// SysV shared memory comes back as the same segment: same shmid, key,
// size, mode and owner, attached by every task at its recorded address
// with an injected shmat, so shmctl(shmid, ...) and shmdt work on after a
// restore and /proc/<pid>/maps reads /SYSV<key> again.
//
// The segment of a checkpoint usually still exists after dump --kill (a
// segment outlives its processes unless it was marked IPC_RMID). Like
// CRIU, which attaches restored tasks to the segment of that id, a
// segment with the recorded id, key and size is taken over: its contents
// are replaced by the checkpoint's, and its mode and owner are set again.
// It is refused while some process is attached to it (the checkpointed
// program still runs, or another one uses it), and when the id or key
// belongs to a different segment. Otherwise the segment is created with
// the recorded id (/proc/sys/kernel/shm_next_id, then shmget with
// IPC_CREAT|IPC_EXCL). A segment that was marked IPC_RMID while attached
// is created, attached by every task, then marked IPC_RMID again. A
// failed restore may leave a segment it created behind, unattached: the
// next restore of the checkpoint takes it over.

const (
	shmRdonly = 0o10000  // SHM_RDONLY
	shmRemap  = 0o40000  // SHM_REMAP
	shmExec   = 0o100000 // SHM_EXEC
)

// A SysV segment is reached by the vmas attaching it, never by an fd: it
// has no entry in the kinds table; task.go attaches it (attachSysV) and
// marks it IPC_RMID after the last attach.

// isSysV reports a vma attaching a SysV shared memory segment.
func isSysV(v *image.VMA) bool {
	return v.Kind == image.VMAShmem && strings.HasPrefix(v.Name, "/SYSV")
}

// sysvOf returns the object of the segment v attaches (its inode is the shmid).
func sysvOf(c *image.Checkpoint, v *image.VMA) (*image.Object, error) {
	o := c.Object(image.SysVID(int(v.Inode)))
	if o == nil || o.Kind != image.ObjSysVShm {
		return nil, fmt.Errorf("vma %s (%s): SysV segment %d is not in the checkpoint", v.DirName(), v.Name, v.Inode)
	}
	return o, nil
}

// sysvSeg is a SysV segment as recorded.
type sysvSeg struct {
	o          *image.Object
	ranges     []image.DataRange // of o.Data
	key        int
	id         int
	size       int
	mode       uint32
	uid, gid   uint32
	dest       bool
	nameKey    int // the key in the vmas' name /SYSV<key> (a dest segment's key is 0)
	hasNameKey bool
	users      []*image.Task // the tasks that attach it
}

// sysvUsers returns the tasks with a vma attaching segment object o.
func sysvUsers(c *image.Checkpoint, o *image.Object) []*image.Task {
	var out []*image.Task
	for _, t := range c.Tasks {
		for _, v := range t.VMAs {
			if isSysV(v) && "sysv-"+strconv.FormatUint(v.Inode, 10) == o.ID {
				out = append(out, t)
				break
			}
		}
	}
	return out
}

func parseSysV(o *image.Object) (*sysvSeg, error) {
	r, err := image.ParseSysVShm(o, false)
	if err != nil {
		return nil, err
	}
	s := &sysvSeg{o: o, ranges: r.DataRanges, key: int(r.Key), id: r.ShmID, size: int(r.Size), mode: r.Mode,
		uid: r.UID, gid: r.GID, dest: r.Dest}
	if s.size <= 0 {
		return nil, fmt.Errorf("%s: bad size %d", o.ID, s.size)
	}
	return s, nil
}

// sysvSegment creates or takes over the segment of object o, fills it
// with the checkpoint's contents (once per restore) and returns it.
func (r *restorer) sysvSegment(o *image.Object, nameKey string) (*sysvSeg, error) {
	s, err := parseSysV(o)
	if err != nil {
		return nil, err
	}
	s.users = sysvUsers(r.c, o)
	if k, err := strconv.ParseUint(nameKey, 16, 32); err == nil {
		s.nameKey, s.hasNameKey = int(int32(uint32(k))), true
	}
	if _, ok := r.shm[o.ID]; ok {
		return s, nil
	}
	took, err := s.create()
	if err != nil {
		return nil, fmt.Errorf("SysV segment %d (key %#x): %w", s.id, uint32(s.key), err)
	}
	r.shm[o.ID] = s.id
	if err := r.fillSysV(s, took); err != nil {
		return nil, fmt.Errorf("SysV segment %d (key %#x): %w", s.id, uint32(s.key), err)
	}
	return s, nil
}

// create takes over the segment with the recorded id (true) or creates it.
func (s *sysvSeg) create() (bool, error) {
	var ds unix.SysvShmDesc
	_, err := unix.SysvShmCtl(s.id, unix.IPC_STAT, &ds)
	if err == nil {
		if err := s.takeOver(&ds); err != nil {
			return false, err
		}
		return true, s.setPerm()
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
		return false, fmt.Errorf("IPC_STAT: %w", err)
	}
	key := s.key
	if s.dest && s.hasNameKey {
		key = s.nameKey // named as before; marked IPC_RMID once attached
	}
	id, err := s.get(key)
	if errors.Is(err, unix.EEXIST) && key != s.key {
		id, err = s.get(s.key)
	}
	if errors.Is(err, unix.EEXIST) {
		old, _ := unix.SysvShmGet(key, 0, 0)
		return false, fmt.Errorf("key %#x belongs to another segment (shmid %d)", uint32(key), old)
	}
	if err != nil {
		return false, err
	}
	if id != s.id {
		unix.SysvShmCtl(id, unix.IPC_RMID, nil)
		return false, fmt.Errorf("the kernel gave shmid %d, not %d (an id in the same slot is in use?)", id, s.id)
	}
	return false, s.setPerm()
}

// get creates the segment with key at the recorded id.
func (s *sysvSeg) get(key int) (int, error) {
	const nextID = "/proc/sys/kernel/shm_next_id"
	if err := os.WriteFile(nextID, []byte(strconv.Itoa(s.id)), 0); err != nil {
		return -1, fmt.Errorf("set %s: %w", nextID, err)
	}
	id, err := unix.SysvShmGet(key, s.size, unix.IPC_CREAT|unix.IPC_EXCL|int(s.mode&0o777))
	if err != nil {
		os.WriteFile(nextID, []byte("-1"), 0)
		return -1, fmt.Errorf("shmget: %w", err)
	}
	return id, nil
}

// setPerm sets the recorded mode and owner.
func (s *sysvSeg) setPerm() error {
	var ds unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(s.id, unix.IPC_STAT, &ds); err != nil {
		return fmt.Errorf("IPC_STAT: %w", err)
	}
	ds.Perm.Uid, ds.Perm.Gid = s.uid, s.gid
	ds.Perm.Mode = ds.Perm.Mode&^0o777 | s.mode&0o777
	if _, err := unix.SysvShmCtl(s.id, unix.IPC_SET, &ds); err != nil {
		return fmt.Errorf("IPC_SET: %w", err)
	}
	return nil
}

// fillSysV writes the checkpoint's contents into the segment through an
// attach of the restorer's own: the pages of every vma of every task that
// attaches it, and the object's data (pages no task had mapped). A
// segment taken over is cleared first.
func (r *restorer) fillSysV(s *sysvSeg, takeOver bool) error {
	mem, err := unix.SysvShmAttach(s.id, 0, 0)
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	defer unix.SysvShmDetach(mem)
	if takeOver {
		if err := unix.Madvise(mem, unix.MADV_REMOVE); err != nil {
			clear(mem)
		}
	}
	write := func(b []byte, off int64) error {
		if off < 0 || off+int64(len(b)) > int64(len(mem)) {
			return fmt.Errorf("%d bytes at %d: beyond the segment's %d bytes", len(b), off, len(mem))
		}
		copy(mem[off:], b)
		return nil
	}
	if err := writeObjectData(s.o, s.ranges, write); err != nil {
		return err
	}
	done := pagesWritten{}
	clip := func(b []byte, off int64) error {
		// The last page of a vma reaches past the segment's size.
		if off >= int64(len(mem)) {
			return nil
		}
		return write(b[:min(int64(len(b)), int64(len(mem))-off)], off)
	}
	for _, t := range r.c.Tasks {
		for _, v := range t.VMAs {
			if !isSysV(v) || v.Inode != uint64(s.id) {
				continue
			}
			if err := readPages(image.PagesPath(r.dir, t.PID, v), v, done, clip); err != nil {
				return fmt.Errorf("task %d: vma %s: %w", t.PID, v.DirName(), err)
			}
		}
	}
	return nil
}

// readPages hands write the saved pages of vma v (its pages file in the
// checkpoint) that are not in done, by offset in the object v maps (v's
// offset plus the offset in the vma), and adds them to done. Pages done
// already, saved by another vma of the same object, are not read again.
func readPages(path string, v *image.VMA, done pagesWritten, write func(b []byte, off int64) error) error {
	rs, err := dataRanges(path, int64(v.Len()))
	if err != nil || len(rs) == 0 {
		return err
	}
	f, err := image.OpenTreeFile(path)
	if err != nil {
		return err
	}
	defer f.Close()
	base := int64(v.Offset)
	buf := make([]byte, chunkSize)
	for _, r := range done.pending(base, rs) {
		for off := r[0]; off < r[1]; {
			b := buf[:min(r[1]-off, chunkSize)]
			if _, err := f.ReadAt(b, off); err != nil {
				return fmt.Errorf("checkpoint file %s: %w", path, err)
			}
			if err := write(b, base+off); err != nil {
				return err
			}
			off += int64(len(b))
		}
	}
	return nil
}

// continuesAttach reports whether vma i of t is the next piece of the
// attach the vma before it belongs to (an attach split by mprotect).
func continuesAttach(t *image.Task, i int) bool {
	if i == 0 {
		return false
	}
	v, w := t.VMAs[i], t.VMAs[i-1]
	return isSysV(w) && w.Inode == v.Inode && w.End == v.Start && w.Offset+w.Len() == v.Offset
}

// attachSysV attaches the segment of vma v (index i of the task's vmas) at
// its address with an injected shmat, then gives every piece of the attach
// its protection and unmaps what the program had unmapped of it.
func (p *target) attachSysV(i int) error {
	t := p.t
	v := t.VMAs[i]
	if continuesAttach(t, i) {
		return nil // attached with the vma before it
	}
	if v.Offset != 0 {
		return fmt.Errorf("vma %s attaches SysV segment %d from offset %#x: cannot restore a partly unmapped attach", v.DirName(), v.Inode, v.Offset)
	}
	o, err := sysvOf(p.r.c, v)
	if err != nil {
		return err
	}
	s, err := p.r.sysvSegment(o, strings.TrimSuffix(strings.TrimPrefix(v.Name, "/SYSV"), " (deleted)"))
	if err != nil {
		return err
	}
	pieces := []*image.VMA{v}
	for j := i + 1; j < len(t.VMAs) && continuesAttach(t, j); j++ {
		pieces = append(pieces, t.VMAs[j])
	}
	flags := uint64(shmRemap | shmRdonly)
	for _, w := range pieces {
		if w.Perms[1] == 'w' || w.HasFlag("mw") {
			flags &^= shmRdonly
		}
		if w.Perms[2] == 'x' {
			flags |= shmExec
		}
	}
	prot := unix.PROT_READ
	if flags&shmRdonly == 0 {
		prot |= unix.PROT_WRITE
	}
	if flags&shmExec != 0 {
		prot |= unix.PROT_EXEC
	}
	got, err := p.sys(p.pid, unix.SYS_SHMAT, uint64(s.id), v.Start, flags)
	if err != nil {
		return fmt.Errorf("vma %s: shmat %d: %w", v.DirName(), s.id, err)
	}
	if got != v.Start {
		return fmt.Errorf("vma %s: segment %d attached at %#x", v.DirName(), s.id, got)
	}
	end := v.Start + (uint64(s.size)+image.PageSize-1)&^(image.PageSize-1)
	last := pieces[len(pieces)-1].End
	if last < end {
		if _, err := p.sys(p.pid, unix.SYS_MUNMAP, last, end-last); err != nil {
			return fmt.Errorf("vma %s: unmap the rest of the attach: %w", v.DirName(), err)
		}
	}
	for _, w := range pieces {
		if w.Prot() != prot {
			if _, err := p.sys(p.pid, unix.SYS_MPROTECT, w.Start, w.Len(), uint64(w.Prot())); err != nil {
				return fmt.Errorf("vma %s: %w", w.DirName(), err)
			}
		}
		p.adviseVMA(w) // queued
	}
	if err := p.flush(); err != nil {
		return err
	}
	if s.dest && p.lastAttach(i) {
		if _, err := unix.SysvShmCtl(s.id, unix.IPC_RMID, nil); err != nil {
			return fmt.Errorf("SysV segment %d: IPC_RMID: %w", s.id, err)
		}
	}
	return nil
}

// lastAttach reports whether the attach at vma i of p is the last attach
// of its segment in the restore.
func (p *target) lastAttach(i int) bool {
	id := p.t.VMAs[i].Inode
	return p.lastInRestore(i, func(t *image.Task, j int) bool {
		return isSysV(t.VMAs[j]) && t.VMAs[j].Inode == id && !continuesAttach(t, j)
	})
}

// lastInRestore reports whether no vma after vma i of p, nor any vma of a
// task restored after p, matches (is mapped later).
func (p *target) lastInRestore(i int, match func(t *image.Task, j int) bool) bool {
	for j := i + 1; j < len(p.t.VMAs); j++ {
		if match(p.t, j) {
			return false
		}
	}
	later := false
	for _, q := range p.r.order {
		if later {
			for j := range q.t.VMAs {
				if match(q.t, j) {
					return false
				}
			}
		}
		later = later || q == p
	}
	return true
}

// checkShm checks, before anything is created, that every SysV segment of
// the checkpoint can be created or taken over (see above) and that memfd
// objects are well formed.
func checkShm(c *image.Checkpoint) error {
	for _, o := range c.Objects {
		switch o.Kind {
		case image.ObjMemfd:
			if _, err := image.ParseMemfd(o, false); err != nil {
				return err
			}
		case image.ObjSysVShm:
			s, err := parseSysV(o)
			if err != nil {
				return err
			}
			s.users = sysvUsers(c, o)
			if err := s.check(); err != nil {
				return fmt.Errorf("SysV segment %d (key %#x): %w", s.id, uint32(s.key), err)
			}
		}
	}
	return nil
}

// check reports why create would fail, without changing anything.
func (s *sysvSeg) check() error {
	var ds unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(s.id, unix.IPC_STAT, &ds); err == nil {
		return s.takeOver(&ds)
	}
	if s.key != 0 {
		if id, err := unix.SysvShmGet(s.key, 0, 0); err == nil {
			return fmt.Errorf("key %#x belongs to another segment (shmid %d)", uint32(s.key), id)
		}
	}
	return nil
}

// takeOver says whether the existing segment ds may be taken over.
func (s *sysvSeg) takeOver(ds *unix.SysvShmDesc) error {
	switch {
	case s.dest || int(ds.Perm.Key) != s.key || int(ds.Segsz) != s.size:
		return fmt.Errorf("shmid %d is taken by another segment (key %#x, %d bytes)", s.id, uint32(ds.Perm.Key), ds.Segsz)
	case ds.Nattch > 0:
		return fmt.Errorf("the segment still exists and %d processes are attached to it (is the checkpointed program still running?)", ds.Nattch)
	}
	// Taking over clears it and sets its mode and owner (IPC_SET): only
	// for tasks that could do that themselves, as its owner or creator
	// (or root), never because a tree says so.
	for _, t := range s.users {
		if euid := uint32(t.Creds.UID[1]); euid != 0 && euid != ds.Perm.Uid && euid != ds.Perm.Cuid {
			return fmt.Errorf("shmid %d exists, owned by uid %d: task %d (uid %d) may not take it over", s.id, ds.Perm.Uid, t.PID, euid)
		}
	}
	return nil
}
