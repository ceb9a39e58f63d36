package dumper

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
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
	prev   *image.Checkpoint // that checkpoint (nil: not loaded or none); its tables may be in the store (VMA.Table)
	lost   string            // why what the tracker had cannot be used
	repo   dedup.Repo        // the store prev was loaded from
	src    dedup.TableSource // the same, if it reads page tables a chunk at a time (nil: prev is loaded whole)
	// preCopy: the dump in progress is a pre-copy pass, whose checkpoint
	// the next dump takes pages from in memory: it gets VMA.Pages.
	preCopy bool
	// holderCmd, if set (Prestart), is the tracker the dump starts
	// ahead, once frozen no more; holder is that tracker until Hold.
	holderCmd []string
	holder    *pendingTracker
	chunks    map[image.Hash][]image.PageRef // chunks of prev read so far (addReused)
	leafs     map[*image.VMA][]image.Hash    // the chunk hashes of prev's stored tables read so far

	tasks  map[int]*taskTrack // the dump in progress
	report *TrackReport

	// once: the tracking of one dump (NewTracking), the default dump of a
	// large tree: a pre-copy pass arms it, the final dump only reads what
	// was written since and arms nothing, then Close ends it.
	once bool
	// unread are vmas of the last pre-copy pass some pages of which could
	// not be read while the tree ran (unmapped meanwhile): the next dump
	// takes nothing from them.
	unread map[*image.VMA]bool
	mu     sync.Mutex // unread, from the copy threads
	// armed are the vmas of the dump in progress that are registered and
	// protected once it is frozen no more: the next dump reads only what
	// was written of them. A pre-copy pass copies only those.
	armed map[*image.VMA]bool
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
	reused  map[*image.VMA][]reuseRun // ascending; may share the previous checkpoint's arrays
}

// reuseRun is a run of a vma's pages taken from the previous checkpoint
// unread: refs, with indices of the vma (a slice of the previous
// checkpoint's table, loaded), or the addresses [from, to) of previous
// vma pv, whose table is in the store (VMA.Table), not loaded.
type reuseRun struct {
	refs     []image.PageRef
	pv       *image.VMA
	from, to uint64
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

// NewTracking is the tracking of the tree rooted at root for one dump
// made of a pre-copy pass and a final dump (Options.PreCopy, then the
// same Tracking without it): no tracker is asked or left, the final dump
// arms nothing for a next one, and Close, after it, ends the protection
// (the kernel drops it when the last copy of a userfaultfd closes, so
// it ends too if this process dies).
func NewTracking(root int) *Tracking {
	return &Tracking{root: root, fds: map[int]heldFD{}, once: true}
}

// ErrNotTracked says a pre-copy pass of a one-dump tracking (NewTracking)
// could not arm write tracking; nothing was copied, the tree runs on, and
// a dump without tracking reads everything.
var ErrNotTracked = errors.New("write tracking not armed")

// markUnread records that pages of vma v of a pre-copy pass could not be
// read: the next dump reads what it finds there.
func (t *Tracking) markUnread(v *image.VMA) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.unread == nil {
		t.unread = map[*image.VMA]bool{}
	}
	t.unread[v] = true
}

// Reason says why the next dump cannot use what was tracked ("": it can).
func (t *Tracking) Reason() string { return t.lost }

// Close drops every fd this process holds: protection ends unless a
// tracker holds copies (Hold). A tracker started ahead and not handed
// them exits.
func (t *Tracking) Close() {
	for pid, h := range t.fds {
		unix.Close(h.fd)
		delete(t.fds, pid)
	}
	if t.holder != nil {
		t.holder.release()
		t.holder = nil
	}
}

// Prestart makes the dumps of t start the tracker Hold hands the fds
// to (exe with args, then --socket and --handoff) ahead, in the background, as soon
// as the tree is armed: Hold then only hands it what it holds. If the
// dump fails or Hold is not called, Close ends it.
func (t *Tracking) Prestart(exe string, args []string) {
	t.holderCmd = append([]string{exe}, args...)
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
	t.prev, t.prevID, t.lost, t.unread = nil, "", why, nil
	t.chunks, t.leafs = nil, nil
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
	if p := t.holder; p != nil {
		t.holder = nil
		<-p.done
		if p.err == nil {
			return p.hand(st, fds)
		}
	}
	return startTracker(exe, args, TrackerSocket(t.dir, t.root), st, fds)
}

// loadPrevious loads the checkpoint protection was armed after (before
// the tree is frozen). From a store that gives page tables a chunk at a
// time (dedup.TableSource), only its manifest: the pages the dump takes
// from it are read once the tree runs again (addReused), and only the
// chunks where a page was written or the layout changed.
func (t *Tracking) loadPrevious(repo dedup.Repo) {
	t.repo = repo
	t.src, _ = repo.(dedup.TableSource)
	if t.prev != nil || t.prevID == "" || len(t.fds) == 0 {
		return
	}
	var c *image.Checkpoint
	var err error
	if t.src != nil {
		c, err = t.src.LoadStored(t.prevID)
	} else {
		c, err = repo.Load(t.prevID)
	}
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
//
// preCopy says the dump is a pre-copy pass. The final dump of a one-dump
// tracking (once, !preCopy) neither re-arms what it scans nor arms
// anything new: no dump follows it.
func (t *Tracking) prepare(tree *frozenTree, c *image.Checkpoint, mem *memCopier, preCopy bool) error {
	t.report = &TrackReport{}
	t.armed = map[*image.VMA]bool{}
	t.preCopy = preCopy
	final := t.once && !preCopy
	if t.once && preCopy && t.prev == nil {
		if err := foreignTracking(tree, c); err != nil {
			return err
		}
	}
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
			written: map[*image.VMA][]bool{}, reused: map[*image.VMA][]reuseRun{}}
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
			if err := tt.scan(task, !final); err != nil {
				t.note("process %d: %v: read in full", ft.pid, err)
				tt.prev = nil
			}
			for v := range tt.written {
				t.armed[v] = true // protected again by the scan
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
	if final {
		// Nothing to arm: the fds are only held until Close.
		for _, tt := range t.tasks {
			if tt.ufd >= 0 {
				t.fds[tt.pid] = heldFD{tt.ufd, tt.start}
			}
		}
	} else {
		t.createUffds(tree, c, arm)
		vmas := 0
		for i, ft := range tree.tasks {
			if tt := t.tasks[ft.pid]; tt != nil && tt.ufd >= 0 && !ft.zombie {
				vmas += t.protectNew(tt, c.Tasks[i])
			}
		}
		if t.once && vmas == 0 && t.prev == nil {
			why := "no process could be armed"
			if len(t.report.Notes) > 0 {
				why = t.report.Notes[0]
			}
			return fmt.Errorf("%w: %s", ErrNotTracked, why)
		}
	}
	// "uw" is ours, not the program's: the image does not show it.
	for _, task := range c.Tasks {
		for _, v := range task.VMAs {
			v.Flags = slices.DeleteFunc(v.Flags, func(f string) bool { return f == "uw" })
		}
	}
	if !final && len(t.holderCmd) > 0 && t.holder == nil {
		t.holder = prestartTracker(t.holderCmd[0], t.holderCmd[1:], TrackerSocket(t.dir, t.root))
	}
	mem.pick, mem.tracked, mem.trackedPages = t.countFull, t.isTracked, t.pages
	if preCopy {
		mem.skip = func(_ int, v *image.VMA) bool { return !t.armed[v] }
		mem.unread = t.markUnread
	}
	return nil
}

// foreignTracking refuses a tree where a private vma is registered with a
// userfaultfd already (VmFlags "uw" before this dump armed anything): a
// tracker of dump --track, or the program's own. Scanning it would clear
// the written state its owner relies on.
func foreignTracking(tree *frozenTree, c *image.Checkpoint) error {
	for i, ft := range tree.tasks {
		if ft.zombie {
			continue
		}
		for _, v := range c.Tasks[i].VMAs {
			if trackable(v) && registered(v) {
				return fmt.Errorf("%w: process %d vma %s is registered with another userfaultfd (tracked by dump --track, or by the program)",
					ErrNotTracked, ft.pid, v.DirName())
			}
		}
	}
	return nil
}

// committed records c as the checkpoint protection now follows.
func (t *Tracking) committed(c *image.Checkpoint) {
	t.prev, t.prevID, t.lost, t.unread = c, c.ID, "", nil
	t.tasks, t.chunks, t.leafs = nil, nil, nil
}
