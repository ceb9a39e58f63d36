package dumper

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/wptrack"
)

// Write tracking (dump --track). After a tracked dump, the private
// writable memory of every process of the tree is write-protected through
// an async userfaultfd (wptrack): created in the process by an injected
// userfaultfd(2), taken with pidfd_getfd, closed in the process again,
// registered and protected from here, and held by a tracker (tracker.go).
// The next tracked dump takes the fds over, asks PAGEMAP_SCAN, while the
// tree is frozen, which pages were written since (re-protecting them in
// the same walk) and copies only those; every other saved page keeps the
// hash the previous checkpoint recorded for that address. Anything that
// breaks the chain makes that part be read in full, and says so: no
// tracker, another process under the pid (start time), a process new to
// the tree, a vma that is new, moved or no longer registered (VmFlags
// "uw"), the previous checkpoint gone. The program sees no fd, no
// mapping and no signal.

// Tracking is the write tracking of one tree, carried from dump to dump.
// A failed dump drops it (its re-arm may have cleared what was written):
// the next dump reads everything.
type Tracking struct {
	dir  string
	root int

	fds    map[int]heldFD    // pid → our copy of its userfaultfd
	prevID string            // the checkpoint protection was armed after
	prev   *image.Checkpoint // that checkpoint with its page tables (nil: not loaded or none)
	lost   string            // why what the tracker had cannot be used

	tasks  map[int]*taskTrack // the dump in progress
	report *TrackReport
}

type heldFD struct {
	fd    int
	start uint64
}

// TrackReport says what tracking did in one dump.
type TrackReport struct {
	Previous        string   // checkpoint the unwritten pages were taken from ("": none)
	PagesCopied     int64    // pages read from the tree
	PagesReferenced int64    // saved pages taken from Previous without reading them
	FullProcesses   int      // processes read in full
	FullVMAs        int      // vmas of tracked processes read in full (new, moved)
	Notes           []string // why parts were read in full, one line each
	Armed           int      // processes write-protected after this dump
}

// taskTrack is one process in a tracked dump.
type taskTrack struct {
	pid     int
	start   uint64
	ufd     int         // our copy of its userfaultfd, -1: none
	prev    *image.Task // its previous checkpoint (nil: read in full)
	written map[*image.VMA][]bool
	reused  map[*image.VMA][]image.PageRef
}

// OpenTracking takes over the tracking of the tree rooted at root from its
// tracker under dir (STORE/track), if one holds it; otherwise, or if what
// it holds cannot be used, the next dump reads everything (Reason says
// why) and starts tracking afresh.
func OpenTracking(dir string, root int) *Tracking {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs // the tracker runs in /
	}
	t := &Tracking{dir: dir, root: root, fds: map[int]heldFD{}}
	st, fds, err := askTracker(TrackerSocket(dir, root), true)
	switch {
	case errors.Is(err, errNoTracker):
		t.lost = fmt.Sprintf("no tracker holds process %d (first tracked dump, or tracking ended)", root)
		return t
	case err != nil:
		t.lost = err.Error()
		return t
	case st.Root != root:
		for _, fd := range fds {
			unix.Close(fd)
		}
		t.lost = fmt.Sprintf("the tracker at %s tracks process %d", TrackerSocket(dir, root), st.Root)
		return t
	}
	for i, task := range st.Tasks {
		t.fds[task.PID] = heldFD{fds[i], task.Start}
	}
	t.prevID = st.Checkpoint
	return t
}

// Reason says why the next dump cannot use what was tracked ("": it can).
func (t *Tracking) Reason() string { return t.lost }

// Close drops every fd this process holds: protection ends unless a
// tracker holds copies (Hold).
func (t *Tracking) Close() {
	for pid, h := range t.fds {
		unix.Close(h.fd)
		delete(t.fds, pid)
	}
}

// drop forgets what was tracked: after a failed dump it may be wrong.
func (t *Tracking) drop(why string) {
	for _, tt := range t.tasks { // taken out of t.fds while the dump ran
		if h, held := t.fds[tt.pid]; tt.ufd >= 0 && (!held || h.fd != tt.ufd) {
			unix.Close(tt.ufd)
		}
	}
	t.tasks = nil
	t.Close()
	t.prev, t.prevID, t.lost = nil, "", why
}

// Hold hands the fds to a new tracker process (exe with args, then
// --socket and --fds), so protection outlives this process, and closes
// this process' copies. The state it holds names the last checkpoint.
func (t *Tracking) Hold(exe string, args []string) error {
	defer t.Close()
	if len(t.fds) == 0 {
		return errors.New("nothing is tracked")
	}
	if t.prevID == "" {
		return errors.New("no committed checkpoint to track from")
	}
	st := TrackerState{Root: t.root, Checkpoint: t.prevID}
	var fds []int
	for pid, h := range t.fds {
		st.Tasks = append(st.Tasks, TrackedTask{PID: pid, Start: h.start})
		fds = append(fds, h.fd)
	}
	return startTracker(exe, args, TrackerSocket(t.dir, t.root), st, fds)
}

// loadPrevious loads the checkpoint protection was armed after (before
// the tree is frozen: its page tables can be large).
func (t *Tracking) loadPrevious(repo dedup.Repo) {
	if t.prev != nil || t.prevID == "" || len(t.fds) == 0 {
		return
	}
	c, err := repo.Load(t.prevID)
	if err != nil {
		t.lost = fmt.Sprintf("the checkpoint tracking was armed after (%s) cannot be loaded: %v", t.prevID, err)
		t.prevID = ""
		return
	}
	t.prev = c
}

// estimate is what a dump of pids will copy, for the prefault: for a
// tracked process only the pages written since (a scan that changes
// nothing), for the others their anonymous memory.
func (t *Tracking) estimate(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		if _, ok := t.fds[pid]; !ok || t.prev == nil {
			total += anonBytes([]int{pid})
			continue
		}
		total += writtenBytes(pid)
	}
	return total
}

// writtenBytes counts the bytes written since protection in pid's
// registered vmas (an unpopulated page may count: it is an estimate),
// from /proc/<pid>/maps (smaps would walk every page table).
func writtenBytes(pid int) int64 {
	maps, err := proc.Read(pid, "maps")
	if err != nil {
		return 0
	}
	pm, err := os.Open(proc.Path(pid, "pagemap"))
	if err != nil {
		return 0
	}
	defer pm.Close()
	var n int64
	for line := range strings.Lines(string(maps)) {
		var start, end uint64
		var perms string
		if _, err := fmt.Sscanf(line, "%x-%x %s", &start, &end, &perms); err != nil || !strings.HasSuffix(perms, "p") {
			continue
		}
		regions, err := wptrack.Written(int(pm.Fd()), start, end, false)
		if err != nil {
			continue // not registered
		}
		for _, r := range regions {
			n += int64(r.End - r.Start)
		}
	}
	return n
}

// trackable says whether v's pages can be tracked: private memory whose
// pages a dump saves (anonymous, or the anonymous copies of a private
// file mapping).
func trackable(v *image.VMA) bool {
	return !v.Shared() && saveContents(v) && v.Kind != image.VMAVdso
}

func registered(v *image.VMA) bool { return slices.Contains(v.Flags, "uw") }

// startTime is field 22 of /proc/<pid>/stat.
func startTime(pid int) (uint64, error) {
	b, err := proc.Read(pid, "stat")
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("process %d: short stat", pid)
	}
	var v uint64
	if _, err := fmt.Sscan(f[19], &v); err != nil {
		return 0, fmt.Errorf("process %d: start time %q: %w", pid, f[19], err)
	}
	return v, nil
}

func (t *Tracking) note(format string, args ...any) {
	if len(t.report.Notes) < 8 {
		t.report.Notes = append(t.report.Notes, fmt.Sprintf(format, args...))
	}
}

// prepare runs while the tree is frozen, after collection: it matches
// every process with what was tracked, asks which pages were written
// (re-arming protection), arms processes and vmas not tracked yet, and
// makes mem copy only what must be read.
func (t *Tracking) prepare(tree *frozenTree, c *image.Checkpoint, mem *memCopier) error {
	t.report = &TrackReport{}
	if t.prev != nil {
		t.report.Previous = t.prev.ID
		if t.prev.ID == "" {
			t.report.Previous = "the last pre-copy pass"
		}
	}
	if t.lost != "" {
		t.note("%s: all memory read", t.lost)
	}
	prevTasks := map[int]*image.Task{}
	if t.prev != nil {
		for _, pt := range t.prev.Tasks {
			prevTasks[pt.PID] = pt
		}
	}
	t.tasks = map[int]*taskTrack{}
	var arm []int // tasks to create a userfaultfd in
	for i, ft := range tree.tasks {
		if ft.zombie {
			continue
		}
		task := c.Tasks[i]
		start, err := startTime(ft.pid)
		if err != nil {
			return err
		}
		tt := &taskTrack{pid: ft.pid, start: start, ufd: -1,
			written: map[*image.VMA][]bool{}, reused: map[*image.VMA][]image.PageRef{}}
		t.tasks[ft.pid] = tt
		if h, ok := t.fds[ft.pid]; ok {
			delete(t.fds, ft.pid)
			if h.start == start {
				tt.ufd = h.fd
			} else {
				unix.Close(h.fd)
				t.note("process %d is not the process that was tracked (pid reused): read in full", ft.pid)
			}
		} else if t.prev != nil {
			t.note("process %d is new to the tree or was not tracked: read in full", ft.pid)
		}
		if tt.ufd >= 0 {
			tt.prev = prevTasks[ft.pid]
			if err := tt.scan(task); err != nil {
				t.note("process %d: %v: read in full", ft.pid, err)
				tt.prev = nil
			}
			if len(tt.written) == 0 {
				// Nothing of it is registered any more: it ran execve
				// (the fd serves the address space it left). Start over.
				unix.Close(tt.ufd)
				tt.ufd, tt.prev = -1, nil
				t.note("process %d has a new address space (execve): read in full", ft.pid)
			}
		}
		if tt.ufd < 0 {
			arm = append(arm, i)
		}
		if tt.prev == nil {
			t.report.FullProcesses++
		}
	}
	// What is left belongs to processes that are gone.
	for pid, h := range t.fds {
		unix.Close(h.fd)
		delete(t.fds, pid)
	}
	t.createUffds(tree, c, arm)
	for i, ft := range tree.tasks {
		if tt := t.tasks[ft.pid]; tt != nil && tt.ufd >= 0 && !ft.zombie {
			t.protectNew(tt, c.Tasks[i])
		}
	}
	// "uw" is ours, not the program's: the image does not show it.
	for _, task := range c.Tasks {
		for _, v := range task.VMAs {
			v.Flags = slices.DeleteFunc(v.Flags, func(f string) bool { return f == "uw" })
		}
	}
	mem.pick, mem.tracked, mem.trackedPages = t.pick, t.isTracked, t.pages
	return nil
}

// isTracked says whether the written pages of v are known.
func (t *Tracking) isTracked(pid int, v *image.VMA) bool {
	tt := t.tasks[pid]
	if tt == nil || tt.prev == nil {
		return false
	}
	_, ok := tt.written[v]
	return ok
}

// pages lists the pages of tracked vma v to read: those present or
// swapped that were written since the last dump, or that no vma of the
// same mapping covered then. Of the others, those the previous checkpoint
// saved keep its hash (tt.reused), the rest stay holes: zero, or as in
// the file. Presence comes from PAGEMAP_SCAN too, as runs: reading the
// pagemap entry of every page would cost more than the copy.
func (t *Tracking) pages(pid int, v *image.VMA) ([]uint32, error) {
	tt := t.tasks[pid]
	w := tt.written[v]
	pm, err := os.Open(proc.Path(pid, "pagemap"))
	if err != nil {
		return nil, fmt.Errorf("open pagemap: %w", err)
	}
	defer pm.Close()
	fileVMA := v.Kind == image.VMAFile
	ret := uint64(wptrack.PagePresent | wptrack.PageSwapped | wptrack.PagePFNZero)
	if fileVMA {
		ret |= wptrack.PageFile // a page lookup each: 20x the walk, asked only here
	}
	regions, err := wptrack.Pages(int(pm.Fd()), v.Start, v.End, wptrack.PagePresent|wptrack.PageSwapped, ret)
	if err != nil {
		return nil, err
	}
	cur := prevCursor{vmas: tt.prev.VMAs, v: v}
	var out []uint32
	for _, r := range regions {
		switch {
		case r.Categories&wptrack.PagePFNZero != 0:
			continue // the zero page
		case fileVMA && r.Categories&wptrack.PageFile != 0:
			continue // as in the file: the restore maps it
		case fileVMA && r.Categories&wptrack.PagePresent == 0:
			// Swapped out, or a uffd-wp marker a zap left in a file
			// mapping (the page may be the file's again): read it.
			for a := r.Start; a < r.End; a += image.PageSize {
				out = append(out, uint32((a-v.Start)/image.PageSize))
			}
			continue
		}
		lo, hi := uint32((r.Start-v.Start)/image.PageSize), uint32((r.End-v.Start)/image.PageSize)
		for i := lo; i < hi; {
			if w[i] {
				out = append(out, i)
				i++
				continue
			}
			j := i + 1
			for j < hi && !w[j] {
				j++
			}
			// [i, j) unwritten: the previous checkpoint's pages there.
			for i < j {
				next, refs, covered := cur.refs(v.Start+uint64(i)*image.PageSize, v.Start+uint64(j)*image.PageSize)
				n := uint32((next - v.Start) / image.PageSize)
				if !covered {
					for ; i < n; i++ {
						out = append(out, i)
					}
					continue
				}
				tt.reused[v] = append(tt.reused[v], refs...)
				i = n
			}
		}
	}
	t.report.PagesCopied += int64(len(out))
	return out, nil
}

// scan asks which pages of tt's registered vmas were written since the
// last dump and protects them again, in one walk per vma.
func (tt *taskTrack) scan(task *image.Task) error {
	pm, err := os.Open(proc.Path(tt.pid, "pagemap"))
	if err != nil {
		return fmt.Errorf("open pagemap: %w", err)
	}
	defer pm.Close()
	for _, v := range task.VMAs {
		if !trackable(v) || !registered(v) {
			continue
		}
		regions, err := wptrack.Written(int(pm.Fd()), v.Start, v.End, true)
		if errors.Is(err, wptrack.ErrNotTracked) {
			continue // not ours: read in full
		}
		if err != nil {
			return err
		}
		tt.written[v] = wptrack.Bitmap(regions, v.Start, v.End)
	}
	return nil
}

// createUffds creates a userfaultfd in each of the tasks at indices arm
// (injected, all at once), takes it with pidfd_getfd and closes it in the
// task again. A task where that fails is not tracked (said in a note).
func (t *Tracking) createUffds(tree *frozenTree, c *image.Checkpoint, arm []int) {
	type created struct {
		tt     *taskTrack
		pidfd  int
		inTask int64 // the fd number in the task, -1: none
		closed bool
		err    error
	}
	tramps := &inject.VdsoTrampolines{}
	var jobs []*inject.Job
	var all []*created
	for _, i := range arm {
		ft, task := tree.tasks[i], c.Tasks[i]
		if !slices.ContainsFunc(task.VMAs, func(v *image.VMA) bool { return trackable(v) && v.Prot()&unix.PROT_WRITE != 0 }) {
			continue
		}
		tramp, err := trampoline(tramps, ft.pid, task)
		if err != nil {
			t.note("process %d not tracked: %v", ft.pid, err)
			continue
		}
		pidfd, err := unix.PidfdOpen(ft.pid, 0)
		if err != nil {
			t.note("process %d not tracked: pidfd_open: %v", ft.pid, err)
			continue
		}
		cr := &created{tt: t.tasks[ft.pid], pidfd: pidfd, inTask: -1}
		all = append(all, cr)
		jobs = append(jobs, createJob(ft.pid, tramp, cr.pidfd, &cr.tt.ufd, &cr.inTask, &cr.closed, &cr.err))
	}
	if len(jobs) == 0 {
		return
	}
	if err := inject.Batch(jobs); err != nil {
		t.note("tracking not armed everywhere: %v", err)
	}
	for k, cr := range all {
		if cr.inTask >= 0 && !cr.closed {
			// The batch stopped before this task's close: close it now,
			// the program must not keep our fd.
			j := jobs[k]
			closeJob := &inject.Job{TID: j.TID, Tramp: j.Tramp, Calls: func(uint64) []inject.Call {
				return []inject.Call{{Name: "close userfaultfd", Nr: unix.SYS_CLOSE, Args: []uint64{uint64(cr.inTask)},
					Done: func(uint64) error { cr.closed = true; return nil }}}
			}}
			inject.Batch([]*inject.Job{closeJob})
		}
		unix.Close(cr.pidfd)
		if cr.err != nil && cr.tt.ufd < 0 {
			t.note("process %d not tracked: %v", cr.tt.pid, cr.err)
		}
		if cr.tt.ufd >= 0 {
			if err := wptrack.EnableAsyncWP(cr.tt.ufd); err != nil {
				t.note("process %d not tracked: %v", cr.tt.pid, err)
				unix.Close(cr.tt.ufd)
				cr.tt.ufd = -1
			}
		}
	}
}

// createJob injects userfaultfd(2) into the main thread of pid, copies the
// new fd into this process (*ufd) and closes it in the task again.
func createJob(pid int, tramp uint64, pidfd int, ufd *int, inTask *int64, closed *bool, failed *error) *inject.Job {
	closeArgs := []uint64{0}
	return &inject.Job{TID: pid, Tramp: tramp, Calls: func(uint64) []inject.Call {
		return []inject.Call{
			{Name: "userfaultfd", Nr: unix.SYS_USERFAULTFD, Args: []uint64{wptrack.OpenFlags}, Done: func(ret uint64) error {
				*inTask = int64(ret)
				closeArgs[0] = ret
				fd, err := unix.PidfdGetfd(pidfd, int(ret), 0)
				if err != nil {
					*failed = fmt.Errorf("pidfd_getfd: %w", err) // the close runs all the same
					return nil
				}
				*ufd = fd
				return nil
			}},
			{Name: "close userfaultfd", Nr: unix.SYS_CLOSE, Args: closeArgs, Done: func(uint64) error {
				*closed = true
				return nil
			}},
		}
	}}
}

// trampoline finds a syscall instruction in pid, in its [vdso] if it has
// an executable one.
func trampoline(tramps *inject.VdsoTrampolines, pid int, task *image.Task) (uint64, error) {
	for _, v := range task.VMAs {
		if v.Kind == image.VMAVdso && strings.Contains(v.Perms, "x") {
			return tramps.Find(pid, v.Start, v.End)
		}
	}
	return inject.FindSyscallInsn(pid)
}

// protectNew registers and write-protects tt's trackable vmas that are
// not registered yet (every vma of a process tracked from now on; vmas
// mapped or moved since the last dump). Read-only private vmas are
// registered too where the kernel lets them be: their anonymous pages
// (relocated data made read-only) are then not read again.
func (t *Tracking) protectNew(tt *taskTrack, task *image.Task) {
	for _, v := range task.VMAs {
		if !trackable(v) || registered(v) {
			continue
		}
		if err := wptrack.Register(tt.ufd, v.Start, v.Len()); err != nil {
			if v.Prot()&unix.PROT_WRITE != 0 {
				t.note("process %d vma %s not tracked: %v", tt.pid, v.DirName(), err)
			}
			continue
		}
		if err := wptrack.Protect(tt.ufd, v.Start, v.Len()); err != nil {
			t.note("process %d vma %s not tracked: %v", tt.pid, v.DirName(), err)
		}
	}
	t.report.Armed++
	t.fds[tt.pid] = heldFD{tt.ufd, tt.start}
}

// pick is memCopier.pick: of the pages of v worth saving (idx), those
// that must be read; the others keep the hash of the previous checkpoint
// (recorded in tt.reused) or are zero (unwritten since a checkpoint that
// had no page there).
func (t *Tracking) pick(pid int, v *image.VMA, idx []uint32) []uint32 {
	tt := t.tasks[pid]
	w, ok := []bool(nil), false
	if tt != nil && tt.prev != nil {
		w, ok = tt.written[v]
	}
	if !ok {
		if tt != nil && tt.prev != nil && len(idx) > 0 && trackable(v) {
			t.report.FullVMAs++ // new, moved, or not ours to track
		}
		t.report.PagesCopied += int64(len(idx))
		return idx
	}
	cur := prevCursor{vmas: tt.prev.VMAs, v: v}
	out := idx[:0]
	for _, i := range idx {
		if w[i] {
			out = append(out, i)
			continue
		}
		h, covered, has := cur.lookup(v.Start + uint64(i)*image.PageSize)
		switch {
		case !covered:
			out = append(out, i)
		case has:
			tt.reused[v] = append(tt.reused[v], image.PageRef{Index: i, Hash: h})
		}
	}
	t.report.PagesCopied += int64(len(out))
	return out
}

// prevCursor finds, for ascending addresses of vma v, the hash the
// previous checkpoint saved there: covered says a vma of the same mapping
// was there, has that it saved a page (if not, the page was zero or not
// there, and still is).
type prevCursor struct {
	vmas   []*image.VMA
	v      *image.VMA
	vi, pi int
}

func (c *prevCursor) lookup(addr uint64) (h image.Hash, covered, has bool) {
	for c.vi < len(c.vmas) && c.vmas[c.vi].End <= addr {
		c.vi++
		c.pi = 0
	}
	if c.vi == len(c.vmas) {
		return h, false, false
	}
	pv := c.vmas[c.vi]
	if pv.Start > addr || !sameMapping(pv, c.v) {
		return h, false, false
	}
	idx := uint32((addr - pv.Start) / image.PageSize)
	for c.pi < len(pv.Pages) && pv.Pages[c.pi].Index < idx {
		c.pi++
	}
	if c.pi < len(pv.Pages) && pv.Pages[c.pi].Index == idx {
		return pv.Pages[c.pi].Hash, true, true
	}
	return h, true, false
}

// refs returns the previous checkpoint's pages in [addr, end) of v, up
// to next (end, or where the vma that covers addr, or the gap before the
// next one, stops), with indices of v; covered is false for a gap or a
// vma of another mapping (then nothing is known of [addr, next)).
// Addresses must ascend from call to call.
func (c *prevCursor) refs(addr, end uint64) (next uint64, refs []image.PageRef, covered bool) {
	for c.vi < len(c.vmas) && c.vmas[c.vi].End <= addr {
		c.vi++
		c.pi = 0
	}
	if c.vi == len(c.vmas) {
		return end, nil, false
	}
	pv := c.vmas[c.vi]
	if pv.Start > addr {
		return min(end, pv.Start), nil, false
	}
	next = min(end, pv.End)
	if !sameMapping(pv, c.v) {
		return next, nil, false
	}
	lo, hi := uint32((addr-pv.Start)/image.PageSize), uint32((next-pv.Start)/image.PageSize)
	for c.pi < len(pv.Pages) && pv.Pages[c.pi].Index < lo {
		c.pi++
	}
	k := c.pi
	for k < len(pv.Pages) && pv.Pages[k].Index < hi {
		k++
	}
	refs = pv.Pages[c.pi:k]
	c.pi = k
	if pv.Start != c.v.Start {
		// Indices of v, not of pv.
		shift := int64(pv.Start-c.v.Start) / image.PageSize
		moved := make([]image.PageRef, len(refs))
		for i, r := range refs {
			moved[i] = image.PageRef{Index: uint32(int64(r.Index) + shift), Hash: r.Hash}
		}
		refs = moved
	}
	return next, refs, true
}

// sameMapping says whether pv (previous checkpoint) and v map the same
// thing at their common addresses: kind, file and, for a file, the same
// offset at the same address.
func sameMapping(pv, v *image.VMA) bool {
	if pv.Kind != v.Kind || pv.Dev != v.Dev || pv.Inode != v.Inode || pv.Name != v.Name || pv.Shared() {
		return false
	}
	if v.Inode != 0 && int64(v.Offset)-int64(pv.Offset) != int64(v.Start)-int64(pv.Start) {
		return false
	}
	return true
}

// addReused puts the pages taken from the previous checkpoint into the
// page tables, in index order, once the copied ones are there.
func (t *Tracking) addReused(stats *image.Stats) {
	for _, tt := range t.tasks {
		for v, refs := range tt.reused {
			v.Pages = mergeRefs(v.Pages, refs)
			stats.PagesTotal += int64(len(refs))
			t.report.PagesReferenced += int64(len(refs))
		}
	}
}

// mergeRefs merges two page lists in ascending index order.
func mergeRefs(a, b []image.PageRef) []image.PageRef {
	if len(a) == 0 {
		return b
	}
	out := make([]image.PageRef, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0].Index < b[0].Index {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}

// committed records c as the checkpoint protection now follows.
func (t *Tracking) committed(c *image.Checkpoint) {
	t.prev, t.prevID, t.lost = c, c.ID, ""
	t.tasks = nil
}
