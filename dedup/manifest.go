package dedup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ckptfs/ckptfs/image"
)

// The manifest of format 2 is JSON of the structs below (docs/store-format.md
// documents every field). They are the store's own: the in-memory model
// (image.Checkpoint) may change, these change only with a new format.
// Structs whose fields match their image counterpart one for one are
// converted with a Go conversion, so a change of the model there fails to
// compile until the manifest follows it; TestManifestCarriesEveryField
// catches fields added anywhere else.

// manifestFormat is the "format" of the manifests this version writes:
// 3 names page-table chunks by their hash (Chunks), 2 numbered them under
// the checkpoint's id (Tables). Both are read.
const manifestFormat = 3

type mfCheckpoint struct {
	Format  int         `json:"format"`
	ID      string      `json:"id"`
	Name    string      `json:"name"`
	Time    time.Time   `json:"time"`
	Host    string      `json:"host"`
	Kernel  string      `json:"kernel"`
	RootPID int         `json:"root_pid"`
	Tasks   []*mfTask   `json:"tasks"`
	Objects []*mfObject `json:"objects,omitempty"`
	Stats   mfStats     `json:"stats"`
}

type mfStats struct {
	PagesTotal int64 `json:"pages_total"`
	PagesZero  int64 `json:"pages_zero"`
	PagesNew   int64 `json:"pages_new"`
	BytesAdded int64 `json:"bytes_added"`
}

type mfObject struct {
	ID   string   `json:"id"`
	Kind string   `json:"kind"`
	Info []string `json:"info,omitempty"`
	Data []byte   `json:"data,omitempty"`
}

type mfTask struct {
	PID           int           `json:"pid"`
	PPID          int           `json:"ppid"`
	PGID          int           `json:"pgid"`
	SID           int           `json:"sid"`
	TTYNr         uint64        `json:"tty_nr"`
	TPGID         int           `json:"tpgid"`
	FilesOf       int           `json:"files_of"`
	Comm          string        `json:"comm"`
	State         string        `json:"state"`
	ExitCode      int           `json:"exit_code"`
	Creds         mfCreds       `json:"creds"`
	Umask         uint32        `json:"umask"`
	Cmdline       []byte        `json:"cmdline"`
	Environ       []byte        `json:"environ"`
	Auxv          []byte        `json:"auxv"`
	Exe           string        `json:"exe"`
	Cwd           string        `json:"cwd"`
	Root          string        `json:"root"`
	MM            mfMM          `json:"mm"`
	Limits        []mfRlimit    `json:"limits"`
	Sigactions    []mfSigaction `json:"sigactions"`
	SharedPending [][]byte      `json:"shared_pending,omitempty"` // raw 128-byte siginfo_t each
	Security      *mfSecurity   `json:"security,omitempty"`
	Threads       []*mfThread   `json:"threads"`
	FDs           []*mfFD       `json:"fds"`
	VMAs          []*mfVMA      `json:"vmas"`
	NSpid         []int         `json:"nspid,omitempty"` // pid at every pid namespace level (image.Task.NSpid)
}

type mfCreds struct {
	UID    [4]int `json:"uid"` // real, effective, saved, fs
	GID    [4]int `json:"gid"`
	Groups []int  `json:"groups"`
}

type mfMM struct {
	StartCode  uint64 `json:"start_code"`
	EndCode    uint64 `json:"end_code"`
	StartData  uint64 `json:"start_data"`
	EndData    uint64 `json:"end_data"`
	StartBrk   uint64 `json:"start_brk"`
	Brk        uint64 `json:"brk"`
	StartStack uint64 `json:"start_stack"`
	ArgStart   uint64 `json:"arg_start"`
	ArgEnd     uint64 `json:"arg_end"`
	EnvStart   uint64 `json:"env_start"`
	EnvEnd     uint64 `json:"env_end"`
}

type mfRlimit struct {
	Resource int    `json:"resource"`
	Cur      uint64 `json:"cur"`
	Max      uint64 `json:"max"`
}

type mfSigaction struct {
	Signo    int    `json:"signo"`
	Handler  uint64 `json:"handler"`
	Flags    uint64 `json:"flags"`
	Restorer uint64 `json:"restorer"`
	Mask     uint64 `json:"mask"`
}

type mfThread struct {
	TID       int         `json:"tid"`
	Comm      string      `json:"comm"`
	Regs      mfRegs      `json:"regs"`
	XState    []byte      `json:"xstate"`
	SigMask   uint64      `json:"sigmask"`
	Pending   [][]byte    `json:"pending,omitempty"`
	Rseq      *mfRseq     `json:"rseq,omitempty"`
	Extras    *mfExtras   `json:"extras,omitempty"`
	Security  *mfSecurity `json:"security,omitempty"`
	InSyscall bool        `json:"in_syscall"`
	NSpid     []int       `json:"nspid,omitempty"` // image.Thread.NSpid
}

// mfRegs is struct user_regs_struct of x86-64, in the kernel's order and
// with the kernel's names.
type mfRegs struct {
	R15      uint64 `json:"r15"`
	R14      uint64 `json:"r14"`
	R13      uint64 `json:"r13"`
	R12      uint64 `json:"r12"`
	Rbp      uint64 `json:"rbp"`
	Rbx      uint64 `json:"rbx"`
	R11      uint64 `json:"r11"`
	R10      uint64 `json:"r10"`
	R9       uint64 `json:"r9"`
	R8       uint64 `json:"r8"`
	Rax      uint64 `json:"rax"`
	Rcx      uint64 `json:"rcx"`
	Rdx      uint64 `json:"rdx"`
	Rsi      uint64 `json:"rsi"`
	Rdi      uint64 `json:"rdi"`
	Orig_rax uint64 `json:"orig_rax"`
	Rip      uint64 `json:"rip"`
	Cs       uint64 `json:"cs"`
	Eflags   uint64 `json:"eflags"`
	Rsp      uint64 `json:"rsp"`
	Ss       uint64 `json:"ss"`
	Fs_base  uint64 `json:"fs_base"`
	Gs_base  uint64 `json:"gs_base"`
	Ds       uint64 `json:"ds"`
	Es       uint64 `json:"es"`
	Fs       uint64 `json:"fs"`
	Gs       uint64 `json:"gs"`
}

// mfSecurity is image.Security: privileges, seccomp filters (Prog is the raw
// struct sock_filter array, base64 in JSON).
type mfSecurity struct {
	Personality uint64            `json:"personality"`
	CapInh      uint64            `json:"cap_inheritable"`
	CapPrm      uint64            `json:"cap_permitted"`
	CapEff      uint64            `json:"cap_effective"`
	CapBnd      uint64            `json:"cap_bounding"`
	CapAmb      uint64            `json:"cap_ambient"`
	SecureBits  uint64            `json:"securebits"`
	NoNewPrivs  bool              `json:"no_new_privs"`
	PDeathSig   int               `json:"pdeathsig"`
	Dumpable    int               `json:"dumpable"`
	SeccompMode int               `json:"seccomp"`
	Filters     []mfSeccompFilter `json:"seccomp_filters,omitempty"`
}

type mfSeccompFilter struct {
	Flags uint64 `json:"flags"`
	Prog  []byte `json:"prog"`
}

func toMfSecurity(s *image.Security) *mfSecurity {
	if s == nil {
		return nil
	}
	m := &mfSecurity{Personality: s.Personality, CapInh: s.CapInh, CapPrm: s.CapPrm, CapEff: s.CapEff,
		CapBnd: s.CapBnd, CapAmb: s.CapAmb, SecureBits: s.SecureBits, NoNewPrivs: s.NoNewPrivs,
		PDeathSig: s.PDeathSig, Dumpable: s.Dumpable, SeccompMode: s.SeccompMode}
	for _, f := range s.Filters {
		m.Filters = append(m.Filters, mfSeccompFilter(f))
	}
	return m
}

func fromMfSecurity(m *mfSecurity) *image.Security {
	if m == nil {
		return nil
	}
	s := &image.Security{Personality: m.Personality, CapInh: m.CapInh, CapPrm: m.CapPrm, CapEff: m.CapEff,
		CapBnd: m.CapBnd, CapAmb: m.CapAmb, SecureBits: m.SecureBits, NoNewPrivs: m.NoNewPrivs,
		PDeathSig: m.PDeathSig, Dumpable: m.Dumpable, SeccompMode: m.SeccompMode}
	for _, f := range m.Filters {
		s.Filters = append(s.Filters, image.SeccompFilter(f))
	}
	return s
}

type mfRseq struct {
	Addr  uint64 `json:"addr"`
	Len   uint32 `json:"len"`
	Sig   uint32 `json:"sig"`
	Flags uint32 `json:"flags"`
}

type mfExtras struct {
	AltStackSP    uint64 `json:"altstack_sp"`
	AltStackFlags uint64 `json:"altstack_flags"`
	AltStackSize  uint64 `json:"altstack_size"`
	ClearTID      uint64 `json:"clear_tid"`
	RobustHead    uint64 `json:"robust_head"`
	RobustLen     uint64 `json:"robust_len"`
}

type mfFD struct {
	Num     int      `json:"num"`
	Kind    string   `json:"kind"`
	Path    string   `json:"path"`
	Flags   uint32   `json:"flags"`
	Pos     int64    `json:"pos"`
	Size    int64    `json:"size"`
	Deleted bool     `json:"deleted"`
	Object  string   `json:"object,omitempty"`
	OFD     string   `json:"ofd,omitempty"`
	Ino     uint64   `json:"ino"`
	Extra   []string `json:"extra,omitempty"`
}

type mfVMA struct {
	Start    uint64   `json:"start"`
	End      uint64   `json:"end"`
	Perms    string   `json:"perms"`
	Offset   uint64   `json:"offset"`
	Dev      string   `json:"dev"`
	Inode    uint64   `json:"inode"`
	Name     string   `json:"name"`
	Kind     string   `json:"kind"`
	FileSize int64    `json:"file_size"`
	Flags    []string `json:"flags,omitempty"`
	// Pages is the number of saved pages (page references), Tables the
	// BLAKE3-256 (hex) of each page-table chunk holding them, in chunk
	// order: Load checks both.
	// Format 3: Chunks is the BLAKE3-256 of each chunk (32 bytes each,
	// concatenated; base64 in JSON), each stored under c/<hash>.
	Pages  int      `json:"pages"`
	Tables []string `json:"tables,omitempty"`
	Chunks []byte   `json:"chunks,omitempty"`
}

// tableSpec is what a manifest says about one vma's page table: the
// number of references and the hashes it records (format 2: of the
// chunks; format 3: of the pieces of the chunk list).
type tableSpec struct {
	pages  int
	chunks []image.Hash
}

// tableFanout is the number of chunk hashes in one piece of a vma's
// chunk list (format 3): 4 KiB pieces, each naming 128 chunks of 256
// references, so 128 MiB of memory.
const tableFanout = 128

// tableValues returns what the manifest records for the page table of v
// (top) and the values to store for it: format 2, the chunks (top: their
// hashes); format 3, the chunks and the pieces of the list of their
// hashes (top: the hashes of the pieces). A two-level table keeps the
// manifest small for a large vma and makes a changed page cost one chunk
// and one piece.
func tableValues(v *image.VMA, format int) (top []image.Hash, values [][]byte) {
	chunks := tableChunks(v, format)
	if format < 3 {
		for _, ch := range chunks {
			top = append(top, Sum(ch))
		}
		return top, chunks
	}
	values = chunks
	for i := 0; i < len(chunks); i += tableFanout {
		var piece []byte
		for _, ch := range chunks[i:min(i+tableFanout, len(chunks))] {
			h := Sum(ch)
			piece = append(piece, h[:]...)
		}
		top = append(top, Sum(piece))
		values = append(values, piece)
	}
	return top, values
}

// chunkRefs returns the page references per page-table chunk of a
// manifest format: format 3 keeps chunks small (18 KiB), so that a page
// changed in a vma costs one small chunk and not a large table.
func chunkRefs(format int) int {
	if format >= 3 {
		return tableChunk3
	}
	return tableChunk
}

// tableChunks splits the page references of v into the values of its
// page-table chunks of the given manifest format.
func tableChunks(v *image.VMA, format int) [][]byte {
	n := chunkRefs(format)
	var out [][]byte
	for ci := 0; ci*n < len(v.Pages); ci++ {
		out = append(out, encodeRefs(v.Pages[ci*n:min(len(v.Pages), (ci+1)*n)]))
	}
	return out
}

func packSiginfos(s []image.Siginfo) [][]byte {
	var out [][]byte
	for i := range s {
		out = append(out, append([]byte(nil), s[i][:]...))
	}
	return out
}

func unpackSiginfos(b [][]byte) ([]image.Siginfo, error) {
	var out []image.Siginfo
	for _, x := range b {
		var s image.Siginfo
		if len(x) != len(s) {
			return nil, fmt.Errorf("siginfo of %d bytes, want %d", len(x), len(s))
		}
		copy(s[:], x)
		out = append(out, s)
	}
	return out, nil
}

// encodeManifest returns the JSON manifest of c (without its page
// references, which go to the page tables: chunks[task][vma] are their
// values).
func encodeManifest(c *image.Checkpoint) (body []byte, chunks [][][][]byte, err error) {
	m := &mfCheckpoint{Format: manifestFormat, ID: c.ID, Name: c.Name, Time: c.Time, Host: c.Host,
		Kernel: c.Kernel, RootPID: c.RootPID, Stats: mfStats(c.Stats)}
	for _, o := range c.Objects {
		m.Objects = append(m.Objects, (*mfObject)(o))
	}
	chunks = make([][][][]byte, len(c.Tasks))
	for ti, t := range c.Tasks {
		mt := &mfTask{PID: t.PID, PPID: t.PPID, PGID: t.PGID, SID: t.SID, TTYNr: t.TTYNr, TPGID: t.TPGID,
			FilesOf: t.FilesOf, Comm: t.Comm, State: t.State, ExitCode: t.ExitCode, Creds: mfCreds(t.Creds),
			Umask: t.Umask, Cmdline: t.Cmdline, Environ: t.Environ, Auxv: t.Auxv, Exe: t.Exe, Cwd: t.Cwd,
			Root: t.Root, MM: mfMM(t.MM), SharedPending: packSiginfos(t.SharedPending),
			Security: toMfSecurity(t.Security), NSpid: t.NSpid}
		for _, l := range t.Limits {
			mt.Limits = append(mt.Limits, mfRlimit(l))
		}
		for _, s := range t.Sigactions {
			mt.Sigactions = append(mt.Sigactions, mfSigaction(s))
		}
		for _, th := range t.Threads {
			mth := &mfThread{TID: th.TID, Comm: th.Comm, Regs: mfRegs(th.Regs), XState: th.XState,
				SigMask: th.SigMask, Pending: packSiginfos(th.Pending), InSyscall: th.InSyscall,
				Security: toMfSecurity(th.Security), NSpid: th.NSpid}
			if th.Rseq != nil {
				r := mfRseq(*th.Rseq)
				mth.Rseq = &r
			}
			if th.Extras != nil {
				x := mfExtras(*th.Extras)
				mth.Extras = &x
			}
			mt.Threads = append(mt.Threads, mth)
		}
		for _, f := range t.FDs {
			mt.FDs = append(mt.FDs, (*mfFD)(f))
		}
		chunks[ti] = make([][][]byte, len(t.VMAs))
		for vi, v := range t.VMAs {
			mv := &mfVMA{Start: v.Start, End: v.End, Perms: v.Perms, Offset: v.Offset, Dev: v.Dev, Inode: v.Inode,
				Name: v.Name, Kind: v.Kind, FileSize: v.FileSize, Flags: v.Flags, Pages: len(v.Pages)}
			var top []image.Hash
			if v.Table != nil && len(v.Pages) == 0 {
				// Stored by the dump already (tables.go): Commit checks it is.
				mv.Pages, top = v.Table.Pages, v.Table.Top
			} else {
				top, chunks[ti][vi] = tableValues(v, manifestFormat)
			}
			for _, h := range top {
				mv.Chunks = append(mv.Chunks, h[:]...)
			}
			mt.VMAs = append(mt.VMAs, mv)
		}
		m.Tasks = append(m.Tasks, mt)
	}
	body, err = json.Marshal(m)
	return body, chunks, err
}

// decodeManifest parses a JSON manifest. The checkpoint has no page
// references yet; specs[task][vma] says what its page tables must hold;
// format is the manifest's format (2 or 3).
func decodeManifest(body []byte) (*image.Checkpoint, [][]tableSpec, int, error) {
	var m mfCheckpoint
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return nil, nil, 0, fmt.Errorf("manifest: %w", err)
	}
	if m.Format != 2 && m.Format != manifestFormat {
		return nil, nil, 0, fmt.Errorf("manifest has format %d, this ckptfs reads 2 and %d", m.Format, manifestFormat)
	}
	c := &image.Checkpoint{ID: m.ID, Name: m.Name, Time: m.Time, Host: m.Host, Kernel: m.Kernel,
		RootPID: m.RootPID, Stats: image.Stats(m.Stats)}
	for _, o := range m.Objects {
		if o == nil {
			return nil, nil, 0, fmt.Errorf("manifest: null object")
		}
		c.Objects = append(c.Objects, (*image.Object)(o))
	}
	specs := make([][]tableSpec, len(m.Tasks))
	for ti, mt := range m.Tasks {
		if mt == nil {
			return nil, nil, 0, fmt.Errorf("manifest: null task %d", ti)
		}
		t := &image.Task{PID: mt.PID, PPID: mt.PPID, PGID: mt.PGID, SID: mt.SID, TTYNr: mt.TTYNr, TPGID: mt.TPGID,
			FilesOf: mt.FilesOf, Comm: mt.Comm, State: mt.State, ExitCode: mt.ExitCode, Creds: image.Creds(mt.Creds),
			Umask: mt.Umask, Cmdline: mt.Cmdline, Environ: mt.Environ, Auxv: mt.Auxv, Exe: mt.Exe, Cwd: mt.Cwd,
			Root: mt.Root, MM: image.MM(mt.MM), Security: fromMfSecurity(mt.Security), NSpid: mt.NSpid}
		var err error
		if t.SharedPending, err = unpackSiginfos(mt.SharedPending); err != nil {
			return nil, nil, 0, fmt.Errorf("manifest: task %d: shared pending: %w", mt.PID, err)
		}
		for _, l := range mt.Limits {
			t.Limits = append(t.Limits, image.Rlimit(l))
		}
		for _, s := range mt.Sigactions {
			t.Sigactions = append(t.Sigactions, image.Sigaction(s))
		}
		for _, mth := range mt.Threads {
			if mth == nil {
				return nil, nil, 0, fmt.Errorf("manifest: task %d: null thread", mt.PID)
			}
			th := &image.Thread{TID: mth.TID, Comm: mth.Comm, Regs: image.Regs(mth.Regs), XState: mth.XState,
				SigMask: mth.SigMask, InSyscall: mth.InSyscall, Security: fromMfSecurity(mth.Security), NSpid: mth.NSpid}
			if th.Pending, err = unpackSiginfos(mth.Pending); err != nil {
				return nil, nil, 0, fmt.Errorf("manifest: thread %d: pending: %w", mth.TID, err)
			}
			if mth.Rseq != nil {
				r := image.Rseq(*mth.Rseq)
				th.Rseq = &r
			}
			if mth.Extras != nil {
				x := image.Extras(*mth.Extras)
				th.Extras = &x
			}
			t.Threads = append(t.Threads, th)
		}
		for _, f := range mt.FDs {
			if f == nil {
				return nil, nil, 0, fmt.Errorf("manifest: task %d: null fd", mt.PID)
			}
			t.FDs = append(t.FDs, (*image.FD)(f))
		}
		specs[ti] = make([]tableSpec, len(mt.VMAs))
		for vi, mv := range mt.VMAs {
			if mv == nil {
				return nil, nil, 0, fmt.Errorf("manifest: task %d: null vma", mt.PID)
			}
			v := &image.VMA{Start: mv.Start, End: mv.End, Perms: mv.Perms, Offset: mv.Offset, Dev: mv.Dev,
				Inode: mv.Inode, Name: mv.Name, Kind: mv.Kind, FileSize: mv.FileSize, Flags: mv.Flags}
			spec := tableSpec{pages: mv.Pages}
			n := chunkRefs(m.Format)
			if m.Format >= 3 {
				n *= tableFanout // the manifest names the pieces of the chunk list
			}
			for _, s := range mv.Tables {
				h, err := image.ParseHash(s)
				if err != nil {
					return nil, nil, 0, fmt.Errorf("manifest: task %d vma %s: %w", mt.PID, v.DirName(), err)
				}
				spec.chunks = append(spec.chunks, h)
			}
			if len(mv.Chunks)%len(image.Hash{}) != 0 || (m.Format == 2 && len(mv.Chunks) > 0) ||
				(m.Format == 3 && len(mv.Tables) > 0) {
				return nil, nil, 0, fmt.Errorf("manifest: task %d vma %s: bad page-table hashes", mt.PID, v.DirName())
			}
			for b := mv.Chunks; len(b) > 0; b = b[len(image.Hash{}):] {
				spec.chunks = append(spec.chunks, image.Hash(b[:len(image.Hash{})]))
			}
			if mv.Pages < 0 || len(spec.chunks) != (mv.Pages+n-1)/n {
				return nil, nil, 0, fmt.Errorf("manifest: task %d vma %s: %d page tables for %d pages", mt.PID, v.DirName(), len(spec.chunks), mv.Pages)
			}
			specs[ti][vi] = spec
			t.VMAs = append(t.VMAs, v)
		}
		c.Tasks = append(c.Tasks, t)
	}
	return c, specs, m.Format, nil
}

// mfSummary is the JSON of a Summary (format 2).
type mfSummary struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Time        time.Time `json:"time"`
	RootPID     int       `json:"root_pid"`
	Tasks       int       `json:"tasks"`
	MemoryBytes int64     `json:"memory_bytes"`
	BytesAdded  int64     `json:"bytes_added"`
}

func encodeSummary(s Summary) ([]byte, error) { return json.Marshal(mfSummary(s)) }

func decodeSummary(body []byte) (Summary, error) {
	var m mfSummary
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(&m); err != nil {
		return Summary{}, fmt.Errorf("summary: %w", err)
	}
	return Summary(m), nil
}
