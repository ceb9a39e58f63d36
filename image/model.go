// Package image holds the checkpoint model shared by the dumper, the store,
// the FUSE view and the restorer, and the tree format that renders a
// checkpoint as files (Render) and reads it back (Load).
package image

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// PageSize is the unit of memory capture and deduplication.
const PageSize = 4096

// Hash identifies a page by its content.
type Hash [32]byte

func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash parses the hex form produced by Hash.String.
func ParseHash(s string) (Hash, error) {
	var h Hash
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(h) {
		return h, fmt.Errorf("bad page hash %q", s)
	}
	copy(h[:], b)
	return h, nil
}

// Checkpoint is one dump of a process tree.
type Checkpoint struct {
	ID      string
	Name    string
	Time    time.Time
	Host    string
	Kernel  string
	RootPID int
	Tasks   []*Task   // parents before children, root first
	Objects []*Object // kernel objects fds refer to: pipes, sockets, deleted files
	Stats   Stats
}

// Object kinds; each has a schema in kind_<name>.go (kinds.go).
const (
	ObjPipe        = "pipe"         // Data: the bytes in flight
	ObjUnixSocket  = "unix"         // Data: the bytes (or messages) queued for reading; Info: UnixSocket
	ObjDeletedFile = "deleted-file" // Data: the file's contents
	ObjMemfd       = "memfd"        // Info: Memfd; Data: the pages no vma has
	ObjSysVShm     = "sysv-shm"     // Info: SysVShm; Data: as memfd
)

// Object is a kernel object that one or more fds refer to, stored once per
// checkpoint under objects/<id>/.
type Object struct {
	ID   string // "pipe-<ino>", "unix-<ino>", "file-<ino>"
	Kind string
	Info []string // "key: value" lines of the kind's schema (ParseUnixSocket, ...)
	Data []byte
}

// Object returns the object with id, or nil.
func (c *Checkpoint) Object(id string) *Object {
	for _, o := range c.Objects {
		if o.ID == id {
			return o
		}
	}
	return nil
}

// Stats are the figures of one checkpoint, filled in by the dumper and store.
type Stats struct {
	PagesTotal int64 // pages captured (present or swapped, excluding zero pages)
	PagesZero  int64 // present pages that were all zero (not stored)
	PagesNew   int64 // pages this checkpoint added to the store
	BytesAdded int64 // bytes this checkpoint added to the store
}

// Task is one process (thread group).
type Task struct {
	PID, PPID, PGID, SID int
	TTYNr                uint64 // controlling terminal (dev_t as in stat's tty_nr), 0 if none
	TPGID                int    // that terminal's foreground process group, -1 if none
	FilesOf              int    // the task whose fd table this one shares (CLONE_FILES), 0: its own
	Comm                 string
	State                string // one letter as in /proc/<pid>/stat: R S D T t Z
	ExitCode             int    // a zombie's wait status (/proc/<pid>/stat field 52)
	Creds                Creds
	Umask                uint32
	Cmdline              []byte // raw, NUL separated, as /proc/<pid>/cmdline
	Environ              []byte // raw, as /proc/<pid>/environ
	Auxv                 []byte // raw, as /proc/<pid>/auxv
	Exe, Cwd, Root       string
	MM                   MM
	Limits               []Rlimit    // RLIMIT_* indexed 0..15
	Sigactions           []Sigaction // signals 1..64, in order
	SharedPending        []Siginfo   // process-wide pending signals
	Threads              []*Thread   // main thread first
	FDs                  []*FD       // ascending fd number
	VMAs                 []*VMA      // ascending address
	Security             *Security   // the main thread's (security.go); nil: not recorded
	// NSpid is the task's pid in every pid namespace from the dumper's
	// (NSpid[0] == PID) inward, as /proc/<pid>/status NSpid; nil when the
	// task lives in the dumper's namespace (pidns.go).
	NSpid []int
}

// Creds are the ids of a task, each as real, effective, saved, fs.
type Creds struct {
	UID    [4]int
	GID    [4]int
	Groups []int
}

// MM holds the mm_struct fields that prctl(PR_SET_MM_MAP) restores.
type MM struct {
	StartCode, EndCode uint64
	StartData, EndData uint64
	StartBrk, Brk      uint64
	StartStack         uint64
	ArgStart, ArgEnd   uint64
	EnvStart, EnvEnd   uint64
}

// Rlimit is one resource limit; Cur/Max use RLIM_INFINITY (^uint64(0)).
type Rlimit struct {
	Resource int
	Cur, Max uint64
}

// Sigaction is the kernel's struct sigaction for one signal.
type Sigaction struct {
	Signo    int
	Handler  uint64 // SIG_DFL 0, SIG_IGN 1, else address
	Flags    uint64
	Restorer uint64
	Mask     uint64
}

// Siginfo is a raw 128-byte siginfo_t as PTRACE_PEEKSIGINFO returns it.
type Siginfo [128]byte

// Signo returns si_signo.
func (s *Siginfo) Signo() int {
	return int(int32(uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24))
}

// Regs are the general purpose registers (struct user_regs_struct).
type Regs = unix.PtraceRegs

// Thread is one thread of a task.
type Thread struct {
	TID       int
	Comm      string
	Regs      Regs
	XState    []byte // raw NT_X86_XSTATE area
	SigMask   uint64
	Pending   []Siginfo // thread-private pending signals
	Rseq      *Rseq     // nil if the thread registered none
	Extras    *Extras   // state only the thread itself can read; nil if not recorded
	InSyscall bool      // stopped inside a restartable syscall (see Regs.Orig_rax)
	Security  *Security // only where it differs from the task's (security.go)
	NSpid     []int     // the thread's id at every level, as Task.NSpid; nil: one level
}

// Extras is per-thread kernel state read by injecting syscalls into the
// thread: its signal stack (sigaltstack), clear_child_tid
// (set_tid_address) and robust futex list.
type Extras struct {
	AltStackSP    uint64
	AltStackFlags uint64 // SS_DISABLE (2) when the thread has none
	AltStackSize  uint64
	ClearTID      uint64
	RobustHead    uint64
	RobustLen     uint64
}

// Rseq is a thread's rseq registration (PTRACE_GET_RSEQ_CONFIGURATION).
type Rseq struct {
	Addr  uint64
	Len   uint32
	Sig   uint32
	Flags uint32
}

// FD kinds.
const (
	FDFile     = "file" // regular file
	FDDir      = "dir"  // directory
	FDChar     = "chr"  // character device (/dev/null, tty, ...)
	FDPipe     = "pipe"
	FDSocket   = "socket"
	FDEventfd  = "eventfd"
	FDEpoll    = "epoll"
	FDTimerfd  = "timerfd"
	FDSignalfd = "signalfd"
	FDInotify  = "inotify"
	FDOther    = "other" // anything else (anon inode of an unsupported kind)
)

// FD is one open file descriptor.
type FD struct {
	Num     int
	Kind    string
	Path    string // readlink of /proc/<pid>/fd/<n>
	Flags   uint32 // open flags from fdinfo, O_CLOEXEC included
	Pos     int64
	Size    int64    // size of a regular file at dump time
	Deleted bool     // path ended in " (deleted)"
	Object  string   // id of the object under objects/ this fd refers to, if any
	OFD     string   // open file description: fds with equal OFD share offset and flags
	Ino     uint64   // inode of what the fd refers to
	Extra   []string // the kernel's mnt_id and ino lines, then the kind's typed lines (kinds.go)
}

// Cloexec reports whether the fd is close-on-exec.
func (f *FD) Cloexec() bool { return f.Flags&unix.O_CLOEXEC != 0 }

// VMA kinds.
const (
	VMAAnon     = "anon"
	VMAFile     = "file"
	VMAHeap     = "heap"
	VMAStack    = "stack"
	VMAVdso     = "vdso"     // [vdso]
	VMAVvar     = "vvar"     // [vvar], [vvar_vclock] and the like
	VMAVsyscall = "vsyscall" // [vsyscall]
	VMAShmem    = "shmem"    // shared anonymous / memfd / sysv
)

// VMA is one mapping, as /proc/<pid>/maps shows it, with its saved pages.
type VMA struct {
	Start, End uint64
	Perms      string // "rwxp" as in maps
	Offset     uint64
	Dev        string // "fd:01"
	Inode      uint64
	Name       string // the maps name column: path, [heap], [stack], ...
	Kind       string
	FileSize   int64     // for file mappings: size of the file at dump time
	Flags      []string  // VmFlags from smaps ("gd", "dd", ...)
	Pages      []PageRef // saved pages, ascending index; absent and zero pages are holes
	// Table, when not nil, is the vma's page table as a dump already put
	// it in the store (dedup.TableBuilder streams tables while pages are
	// stored, instead of holding every reference until the commit): Pages
	// is then empty. Load gives Pages, never Table.
	Table *StoredTable
}

// StoredTable names a page table already in a store: its number of page
// references and the hashes of the pieces of its chunk list, as a
// format-3 manifest records them for a vma (docs/store-format.md).
type StoredTable struct {
	Pages int
	Top   []Hash
}

// SavedPages is the number of saved pages of v: len(Pages), or the count
// of its stored Table.
func (v *VMA) SavedPages() int {
	if v.Table != nil {
		return v.Table.Pages
	}
	return len(v.Pages)
}

// PageRef says page Index (from Start) has content Hash.
type PageRef struct {
	Index uint32
	Hash  Hash
}

// Len is the size of the mapping in bytes.
func (v *VMA) Len() uint64 { return v.End - v.Start }

// Shared reports a MAP_SHARED mapping.
func (v *VMA) Shared() bool { return len(v.Perms) == 4 && v.Perms[3] == 's' }

// SharedAnon says whether v maps MAP_SHARED|MAP_ANONYMOUS memory: a shmem
// object of its own ("/dev/zero (deleted)"), not a memfd or SysV segment
// (those are objects of the checkpoint). The dumper saves each page of
// such an object once, in the first vma that maps it; Render shows every
// vma of the object with all of its pages.
func (v *VMA) SharedAnon() bool {
	return v.Kind == VMAShmem && v.Shared() && !strings.HasPrefix(v.Name, "/memfd:") && !strings.HasPrefix(v.Name, "/SYSV")
}

// Prot returns the PROT_* bits of Perms.
func (v *VMA) Prot() int {
	p := 0
	if len(v.Perms) >= 3 {
		if v.Perms[0] == 'r' {
			p |= unix.PROT_READ
		}
		if v.Perms[1] == 'w' {
			p |= unix.PROT_WRITE
		}
		if v.Perms[2] == 'x' {
			p |= unix.PROT_EXEC
		}
	}
	return p
}

// HasFlag reports whether VmFlags contains f.
func (v *VMA) HasFlag(f string) bool {
	for _, x := range v.Flags {
		if x == f {
			return true
		}
	}
	return false
}

// DirName is the vma's directory name under vmas/: start-end in hex as in maps.
func (v *VMA) DirName() string {
	var b [33]byte
	d := strconv.AppendUint(b[:0], v.Start, 16)
	d = append(d, '-')
	return string(strconv.AppendUint(d, v.End, 16))
}

// Task returns the task with pid, or nil.
func (c *Checkpoint) Task(pid int) *Task {
	for _, t := range c.Tasks {
		if t.PID == pid {
			return t
		}
	}
	return nil
}

// MemoryBytes is the sum of saved page bytes over all tasks.
func (c *Checkpoint) MemoryBytes() int64 {
	var n int64
	for _, t := range c.Tasks {
		for _, v := range t.VMAs {
			n += int64(v.SavedPages()) * PageSize
		}
	}
	return n
}
