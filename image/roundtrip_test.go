package image

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// memSource is an in-memory PageSource.
type memSource map[Hash][]byte

func (m memSource) ReadPage(h Hash, buf []byte) error {
	p, ok := m[h]
	if !ok {
		return fmt.Errorf("page %s missing", h)
	}
	copy(buf, p)
	return nil
}

func (m memSource) add(fill byte) Hash {
	p := bytes.Repeat([]byte{fill}, PageSize)
	h := Hash(sha256.Sum256(p))
	m[h] = p
	return h
}

func sampleCheckpoint(src memSource) *Checkpoint {
	th := &Thread{TID: 100, Comm: "prog", XState: []byte{1, 2, 3}, SigMask: 0x4000,
		Rseq:   &Rseq{Addr: 0x7f0000001000, Len: 32, Sig: 0x53053053},
		Extras: &Extras{AltStackSP: 0xc000100000, AltStackSize: 32768, ClearTID: 0x7f00000010, RobustHead: 0x7f00000020, RobustLen: 24}}
	th.Regs.Rip = 0x401000
	th.Regs.Rax = uint64(0xfffffffffffffdfc) // -516
	th.Regs.Orig_rax = 35
	th.Regs.Fs_base = 0x7f00000000
	th.InSyscall = true
	var si Siginfo
	si[0] = 10
	th2 := &Thread{TID: 101, Comm: "worker", XState: []byte{4}, Pending: []Siginfo{si}}
	heap := &VMA{Start: 0x600000, End: 0x605000, Perms: "rw-p", Dev: "00:00", Name: "[heap]", Kind: VMAHeap,
		Flags: []string{"rd", "wr", "mr"},
		Pages: []PageRef{{Index: 0, Hash: src.add('a')}, {Index: 1, Hash: src.add('b')}, {Index: 4, Hash: src.add('c')}}}
	file := &VMA{Start: 0x400000, End: 0x401000, Perms: "r-xp", Offset: 0x1000, Dev: "fd:01", Inode: 42,
		Name: "/usr/bin/my prog", Kind: VMAFile, FileSize: 8192}
	root := &Task{PID: 100, PPID: 1, PGID: 100, SID: 90, TTYNr: 34816, TPGID: 100, Comm: "prog", State: "S",
		Creds: Creds{UID: [4]int{1000, 1000, 1000, 1000}, GID: [4]int{100, 100, 100, 100}, Groups: []int{4, 24}},
		Umask: 0o22, Cmdline: []byte("prog\x00-x\x00"), Environ: []byte("A=1\x00"), Auxv: []byte{6, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0},
		Exe: "/usr/bin/my prog", Cwd: "/tmp", Root: "/",
		MM:            MM{StartCode: 0x400000, EndCode: 0x401000, Brk: 0x605000, ArgStart: 0x7ffc0000},
		Limits:        []Rlimit{{Resource: unix.RLIMIT_NOFILE, Cur: 1024, Max: 4096}, {Resource: unix.RLIMIT_STACK, Cur: 8 << 20, Max: rlimInfinity}},
		Sigactions:    []Sigaction{{Signo: 1}, {Signo: 2, Handler: 0x401234, Flags: 0x4000000, Restorer: 0x401300, Mask: 2}, {Signo: 13, Handler: 1}},
		SharedPending: []Siginfo{si},
		Threads:       []*Thread{th, th2},
		FDs: []*FD{{Num: 0, Kind: FDChar, Path: "/dev/null", Flags: 0o100002},
			{Num: 7, Kind: FDFile, Path: "/tmp/out", Flags: 0o2102001, Pos: 77, Size: 77, OFD: "ofd-1", Ino: 3, Extra: []string{"mnt_id:\t24", "ino:\t3"}},
			{Num: 8, Kind: FDPipe, Path: "pipe:[99]", Flags: 0, Object: "pipe-99", Ino: 99, Extra: []string{"ino:\t99"}}},
		VMAs: []*VMA{file, heap},
	}
	child := &Task{PID: 105, PPID: 100, PGID: 100, SID: 90, TPGID: -1, FilesOf: 100, Comm: "kid", State: "Z", ExitCode: 7 << 8,
		Creds: root.Creds}
	return &Checkpoint{ID: "20261125-000000-abcd", Name: "n", Time: time.Date(2026, 11, 25, 1, 2, 3, 4, time.UTC),
		Host: "h", Kernel: "6.18", RootPID: 100, Tasks: []*Task{root, child},
		Objects: []*Object{{ID: "pipe-99", Kind: ObjPipe, Info: []string{"ino: 99", "capacity: 65536"}, Data: []byte("in flight")}},
		Stats:   Stats{PagesTotal: 3, PagesZero: 1, PagesNew: 3, BytesAdded: 3 * PageSize}}
}

func TestRoundTrip(t *testing.T) {
	src := memSource{}
	want := sampleCheckpoint(src)
	dir := t.TempDir()
	if err := WriteTree(dir, Render(want, src)); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Pages live in the pages files, not in the loaded model.
	heap := want.Tasks[0].VMAs[1]
	b, err := os.ReadFile(PagesPath(dir, 100, heap))
	if err != nil {
		t.Fatal(err)
	}
	wantMem := append(append(bytes.Repeat([]byte{'a'}, PageSize), bytes.Repeat([]byte{'b'}, PageSize)...), make([]byte, 2*PageSize)...)
	wantMem = append(wantMem, bytes.Repeat([]byte{'c'}, PageSize)...)
	if !bytes.Equal(b, wantMem) {
		t.Error("heap pages differ")
	}
	f, err := os.Open(PagesPath(dir, 100, heap))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if off, err := unix.Seek(int(f.Fd()), 2*PageSize, unix.SEEK_DATA); err != nil || off != 4*PageSize {
		t.Errorf("SEEK_DATA from hole: %d %v", off, err)
	}
	for _, tk := range want.Tasks {
		for _, v := range tk.VMAs {
			v.Pages = nil
		}
	}
	for _, tk := range got.Tasks {
		for _, th := range tk.Threads {
			if th.Pending == nil {
				th.Pending = []Siginfo{}
			}
		}
	}
	normalize(want)
	normalize(got)
	if !reflect.DeepEqual(want, got) {
		for i := range want.Tasks {
			if !reflect.DeepEqual(want.Tasks[i], got.Tasks[i]) {
				t.Errorf("task %d differs:\nwant %+v\n got %+v", want.Tasks[i].PID, *want.Tasks[i], *got.Tasks[i])
			}
		}
		t.Fatalf("round trip differs")
	}
}

// normalize makes empty and nil slices equal for comparison.
func normalize(c *Checkpoint) {
	for _, t := range c.Tasks {
		if len(t.SharedPending) == 0 {
			t.SharedPending = nil
		}
		if len(t.Creds.Groups) == 0 {
			t.Creds.Groups = nil
		}
		if len(t.Cmdline) == 0 {
			t.Cmdline = nil
		}
		if len(t.Environ) == 0 {
			t.Environ = nil
		}
		if len(t.Auxv) == 0 {
			t.Auxv = nil
		}
		for _, th := range t.Threads {
			if len(th.Pending) == 0 {
				th.Pending = nil
			}
		}
		for _, v := range t.VMAs {
			if len(v.Flags) == 0 {
				v.Flags = nil
			}
		}
	}
}

func TestLoadNamesGarbledFile(t *testing.T) {
	src := memSource{}
	dir := t.TempDir()
	if err := WriteTree(dir, Render(sampleCheckpoint(src), src)); err != nil {
		t.Fatal(err)
	}
	regs := dir + "/tasks/100/threads/101/regs"
	if err := os.WriteFile(regs, []byte("rip: nonsense\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte(regs)) {
		t.Fatalf("error does not name %s: %v", regs, err)
	}
	os.Remove(dir + "/tasks/100/mm")
	if _, err := Load(dir); err == nil {
		t.Fatal("missing mm accepted")
	}
}

func TestRenderMapsFormat(t *testing.T) {
	v := []*VMA{{Start: 0x400000, End: 0x401000, Perms: "r-xp", Dev: "fd:01", Inode: 42, Name: "/bin/x"},
		{Start: 0x7f0000000000, End: 0x7f0000001000, Perms: "---p", Dev: "00:00"}}
	want := "00400000-00401000 r-xp 00000000 fd:01 42                                 /bin/x\n" +
		"7f0000000000-7f0000001000 ---p 00000000 00:00 0 \n"
	if got := string(RenderMaps(v)); got != want {
		t.Errorf("maps:\n%q\nwant\n%q", got, want)
	}
}
