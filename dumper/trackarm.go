package dumper

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/wptrack"
)

// Arming write tracking while the tree is frozen: the re-arm of what was
// tracked (PAGEMAP_SCAN with PM_SCAN_WP_MATCHING), a userfaultfd for each
// process not tracked yet, and registration of vmas new since.

// scan asks which pages of tt's registered vmas were written since the
// last dump and, with rearm, protects them again in the same walk.
func (tt *taskTrack) scan(task *image.Task, rearm bool) error {
	pm, err := os.Open(proc.Path(tt.pid, "pagemap"))
	if err != nil {
		return fmt.Errorf("open pagemap: %w", err)
	}
	defer pm.Close()
	for _, v := range task.VMAs {
		if !trackable(v) || !registered(v) {
			continue
		}
		regions, err := wptrack.Written(int(pm.Fd()), v.Start, v.End, rearm)
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
// (relocated data made read-only) are then not read again. It returns how
// many vmas it registered.
func (t *Tracking) protectNew(tt *taskTrack, task *image.Task) int {
	n := 0
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
			continue
		}
		t.armed[v] = true
		n++
	}
	t.report.Armed++
	t.fds[tt.pid] = heldFD{tt.ufd, tt.start}
	return n
}
