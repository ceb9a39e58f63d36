package dumper

import (
	"fmt"
	"slices"
	"strconv"
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

// Character devices that are reopened by path on restore: the memory
// devices (null, zero, full, random, urandom) and terminals.
func restorableDevice(rdev uint64) bool {
	major, minor := unix.Major(rdev), unix.Minor(rdev)
	switch major {
	case 1:
		return minor == 3 || minor == 5 || minor == 7 || minor == 8 || minor == 9
	case 5: // /dev/tty, /dev/console; not /dev/ptmx (5:2): a pty master
		return minor != 2
	case 4, 136: // tty*, pts
		return true
	}
	return false
}

// checkFDs refuses kinds of fd that cannot be checkpointed yet: sockets
// other than unix ones, io_uring and other anonymous inodes, devices.
func checkFDs(pid int, fds []*image.FD) error {
	for _, f := range fds {
		switch f.Kind {
		case image.FDOther:
			return &ErrUnsupported{PID: pid, FD: f.Num, Kind: strings.TrimPrefix(f.Path, "anon_inode:"), What: f.Path}
		case image.FDInotify:
			if w := unresolvedInotify(f); w != "" {
				return &ErrUnsupported{PID: pid, FD: f.Num, Kind: "an inotify watch without a path", What: w}
			}
		case image.FDSocket:
			isUnix, err := unixSocket(pid, f.Num)
			if err != nil {
				return err
			}
			if !isUnix {
				ino, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(f.Path, "socket:["), "]"), 10, 64)
				return &ErrUnsupported{PID: pid, FD: f.Num, Kind: socketKind(pid, ino), What: f.Path}
			}
		case image.FDChar:
			var st unix.Stat_t
			if err := unix.Stat(proc.FDPath(pid, f.Num), &st); err == nil && !restorableDevice(st.Rdev) {
				kind := "a device"
				if unix.Major(st.Rdev) == 5 && unix.Minor(st.Rdev) == 2 {
					kind = "a pty master (ptys are not recreated; a program on a terminal can be restored with --shell-job)"
				}
				return &ErrUnsupported{PID: pid, FD: f.Num, Kind: kind, What: f.Path}
			}
		}
	}
	return nil
}

// unixSocket says whether fd n of pid is a unix socket, by the protocol
// name sockfs gives as the xattr system.sockprotoname ("UNIX",
// "UNIX-STREAM"; "TCP", "UDP", "NETLINK"... for others): one syscall per
// socket, where reading /proc/<pid>/net/unix (every unix socket of the
// namespace) for each process of a 500-process tree took a second.
func unixSocket(pid, n int) (bool, error) {
	buf := make([]byte, 64)
	k, err := unix.Getxattr(proc.FDPath(pid, n), "system.sockprotoname", buf)
	if err != nil {
		return false, fmt.Errorf("protocol of socket fd %d of %d: %w", n, pid, err)
	}
	return strings.HasPrefix(unix.ByteSliceToString(buf[:k]), "UNIX"), nil
}

// socketKind names the protocol of a non-unix socket for the error message.
func socketKind(pid int, ino uint64) string {
	needle := " " + strconv.FormatUint(ino, 10) + " "
	for _, p := range []struct{ file, kind string }{
		{"net/tcp", "a TCP socket"}, {"net/tcp6", "a TCP socket"},
		{"net/udp", "a UDP socket"}, {"net/udp6", "a UDP socket"},
		{"net/raw", "a raw socket"}, {"net/raw6", "a raw socket"},
		{"net/netlink", "a netlink socket"}, {"net/packet", "a packet socket"},
	} {
		if b, err := proc.Read(pid, p.file); err == nil && strings.Contains(string(b), needle) {
			return p.kind
		}
	}
	return "a socket"
}

// checkVMAs refuses mappings of devices (other than /dev/zero).
func checkVMAs(pid int, vmas []*image.VMA) error {
	for _, v := range vmas {
		if strings.HasPrefix(v.Name, "/dev/") && !strings.HasPrefix(v.Name, "/dev/zero") && v.Kind != image.VMAShmem {
			return &ErrUnsupported{PID: pid, FD: -1, Kind: "a device mapping", What: v.Name}
		}
	}
	return nil
}

// precheck looks at the tree before anything is seized, so that a tree that
// cannot be checkpointed is refused without being touched at all. It
// returns the pids it saw.
func precheck(root int) ([]int, error) {
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
	if err := precheckUnix(byPid); err != nil { // unixsock.go
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
