package dumper

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// ErrUnsupported says the tree holds something ckptfs cannot checkpoint yet.
type ErrUnsupported struct {
	PID  int
	FD   int // -1 for a mapping, sharedTable for a whole fd table
	Kind string
	What string
}

// ErrNotRestorable says the dump refused a tree that restore would refuse
// (a file it could not reopen, a session it could not recreate, ...),
// before seizing anything: Err says what.
type ErrNotRestorable struct{ Err error }

func (e *ErrNotRestorable) Error() string { return e.Err.Error() }
func (e *ErrNotRestorable) Unwrap() error { return e.Err }

// sharedTable is ErrUnsupported.FD for an fd table shared with another process.
const sharedTable = -2

func (e *ErrUnsupported) Error() string {
	if e.FD == sharedTable {
		return fmt.Sprintf("process %d %s (%s): cannot checkpoint that yet", e.PID, e.What, e.Kind)
	}
	if e.FD < 0 {
		return fmt.Sprintf("process %d maps %s (%s): cannot checkpoint that yet", e.PID, e.What, e.Kind)
	}
	return fmt.Sprintf("process %d fd %d is %s (%s): cannot checkpoint that yet", e.PID, e.FD, e.Kind, e.What)
}

// checkFDs refuses fds that cannot be checkpointed: what each kind's
// refuse finds from the live kernel (sockets other than unix ones, devices
// other than memory devices and terminals), then the kind's image.Refusal
// rule, the one the restorer applies too (other anonymous inodes, inotify
// watches without a path).
func checkFDs(pid int, fds []*image.FD) error {
	for _, f := range fds {
		if err := kindOf(f).refuse(pid, f); err != nil {
			return err
		}
		var r *image.RefusedFD
		if err := image.Refusal(f); errors.As(err, &r) {
			return &ErrUnsupported{PID: pid, FD: f.Num, Kind: r.Why, What: r.What}
		} else if err != nil {
			return fmt.Errorf("process %d fd %d: %w", pid, f.Num, err)
		}
	}
	return nil
}

// checkVMAs refuses mappings of devices (other than /dev/zero): files
// under /dev that are not character or block devices (POSIX shared memory
// in /dev/shm, a tmpfs) are files like any other.
func checkVMAs(pid int, vmas []*image.VMA) error {
	for _, v := range vmas {
		if strings.HasPrefix(v.Name, "/dev/") && !strings.HasPrefix(v.Name, "/dev/zero") && v.Kind != image.VMAShmem && !mapsNonDevice(pid, v) {
			return &ErrUnsupported{PID: pid, FD: -1, Kind: "a device mapping", What: v.Name}
		}
	}
	return nil
}

// mapsNonDevice says whether vma v of pid maps a file that is neither a
// character nor a block device (as its map_files link says).
func mapsNonDevice(pid int, v *image.VMA) bool {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, v.Start, v.End), &st); err != nil {
		return false
	}
	t := st.Mode & unix.S_IFMT
	return t != unix.S_IFCHR && t != unix.S_IFBLK
}

// precheck looks at the tree before anything is seized, so that a tree that
// cannot be checkpointed is refused without being touched at all. It
// returns the pids it saw.
func precheck(root int, tcpEstablished bool, inheritFiles []string) ([]int, error) {
	var pids, live []int
	byPid := map[int][]*image.FD{}
	err := walkTree(root, func(pid int) (bool, error) {
		pids = append(pids, pid)
		fds, err := collectFDs(pid)
		if err != nil {
			return false, nil // exited or a zombie: the frozen check decides
		}
		byPid[pid] = fds
		if !zombie(pid) {
			live = append(live, pid)
			if err := precheckSecurity(pid); err != nil { // security.go
				return false, err
			}
		}
		return true, checkFDs(pid, fds)
	})
	if err != nil {
		return nil, err
	}
	if _, err := sharedTables(live, parentOf); err != nil {
		return nil, err
	}
	if err := precheckFiles(live, byPid, inheritFiles); err != nil { // refuse_files.go
		return nil, &ErrNotRestorable{Err: err}
	}
	if err := precheckTree(root, pids, byPid); err != nil { // refuse_tree.go
		return nil, &ErrNotRestorable{Err: err}
	}
	if err := precheckUnix(byPid); err != nil { // kind_unixsock.go
		return nil, err
	}
	if err := precheckTCP(byPid, tcpEstablished); err != nil { // kind_tcp.go
		return nil, err
	}
	return pids, nil
}

// zombie says whether pid has exited (zombie or dead): it has no fd table.
func zombie(pid int) bool {
	b, err := proc.Read(pid, "stat")
	if err != nil {
		return true
	}
	st, err := proc.ParseStat(b)
	return err != nil || st.State == "Z" || st.State == "X"
}

// sharedTables finds processes that share one fd table (clone(CLONE_FILES)
// without CLONE_THREAD) among pids, live processes in tree order (parents
// first), and returns, for each process that shares the table of an
// earlier one, that earlier owner. Restore creates such a process from its
// parent with CLONE_FILES, so the parent must hold the same table; any
// other sharing is refused.
func sharedTables(pids []int, parent func(pid int) int) (map[int]int, error) {
	// Sort by fd table (kcmp orders them), tree order within one table.
	order := map[int]int{}
	for i, pid := range pids {
		order[pid] = i
	}
	sorted := slices.Clone(pids)
	slices.SortStableFunc(sorted, func(a, b int) int {
		c, err := ptrace.CompareFiles(a, b)
		if err != nil {
			return order[a] - order[b] // one of them exited meanwhile
		}
		return c
	})
	owner := map[int]int{}
	for i := 1; i < len(sorted); i++ {
		a, b := sorted[i-1], sorted[i]
		if same, err := ptrace.SameFiles(a, b); err != nil || !same {
			continue
		}
		first := a
		if o, ok := owner[a]; ok {
			first = o
		}
		pp := parent(b)
		if pp != first && owner[pp] != first {
			return nil, &ErrUnsupported{PID: first, FD: sharedTable, Kind: "clone with CLONE_FILES but not CLONE_THREAD",
				What: fmt.Sprintf("shares its fd table with process %d, whose parent %d does not", b, pp)}
		}
		owner[b] = first
	}
	return owner, nil
}

// parentOf returns the parent pid of a live process (0 if it is gone).
func parentOf(pid int) int {
	b, err := proc.Read(pid, "stat")
	if err != nil {
		return 0
	}
	st, err := proc.ParseStat(b)
	if err != nil {
		return 0
	}
	return st.PPID
}

// markSharedTables records, frozen, which tasks share the fd table of an
// earlier one (Task.FilesOf).
func markSharedTables(c *image.Checkpoint) error {
	var live []int
	ppid := map[int]int{}
	for _, t := range c.Tasks {
		ppid[t.PID] = t.PPID
		if t.State != "Z" {
			live = append(live, t.PID)
		}
	}
	owner, err := sharedTables(live, func(pid int) int { return ppid[pid] })
	if err != nil {
		return err
	}
	for _, t := range c.Tasks {
		if t.FilesOf = owner[t.PID]; t.FilesOf != 0 {
			t.FDs = nil // the owner's, recorded once
		}
	}
	return nil
}
