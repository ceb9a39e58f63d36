//go:build linux && amd64

package image_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
	"github.com/ckptfs/ckptfs/internal/ptrace"
)

// memSource is an in-memory PageSource.
type memSource struct {
	mu    sync.Mutex
	pages map[image.Hash][]byte
}

func (m *memSource) ReadPage(h image.Hash, buf []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pages[h]
	if !ok {
		return fmt.Errorf("page %s missing", h)
	}
	copy(buf, p)
	return nil
}

func (m *memSource) put(p []byte) image.Hash {
	h := image.Hash(sha256.Sum256(p))
	m.mu.Lock()
	m.pages[h] = append([]byte(nil), p...)
	m.mu.Unlock()
	return h
}

// buildProg compiles tests/progs/backtrace.c with -g and returns the executable.
func buildProg(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc")
	}
	dir := t.TempDir()
	src := "../tests/progs/backtrace.c"
	exe := filepath.Join(dir, "prog")
	if out, err := exec.Command("gcc", "-g", "-O0", "-pthread", "-o", exe, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	return exe
}

// startProg runs exe until it prints "ready" and kills it at cleanup.
func startProg(t *testing.T, exe string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(exe)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		t.Fatalf("prog: %q %v", line, err)
	}
	return cmd
}

func vmaKind(name string) string {
	switch {
	case strings.HasPrefix(name, "[vvar"):
		return image.VMAVvar
	case name == "[vdso]":
		return image.VMAVdso
	case name == "[vsyscall]":
		return image.VMAVsyscall
	case name == "[heap]":
		return image.VMAHeap
	case name == "[stack]":
		return image.VMAStack
	case strings.HasPrefix(name, "/"):
		return image.VMAFile
	}
	return image.VMAAnon
}

// snapshot builds the model of the stopped process pid by hand, saving
// pages as the dumper does: zero pages and pages of file vmas equal to the
// file are left out.
func snapshot(t *testing.T, pid int, src *memSource) *image.Task {
	t.Helper()
	task := &image.Task{PID: pid, PPID: os.Getpid(), PGID: pid, SID: pid, State: "S"}
	task.Comm = strings.TrimSpace(string(must(proc.Read(pid, "comm"))))
	task.Cmdline = must(proc.Read(pid, "cmdline"))
	task.Auxv = must(proc.Read(pid, "auxv"))
	task.Exe = must(proc.Readlink(pid, "exe"))
	tids := must(proc.Tasks(pid))

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for _, tid := range tids {
		if err := ptrace.Seize(tid, 0); err != nil {
			t.Fatal(err)
		}
		if err := ptrace.Interrupt(tid); err != nil {
			t.Fatal(err)
		}
		if _, err := ptrace.Wait(tid); err != nil {
			t.Fatal(err)
		}
		th := &image.Thread{TID: tid}
		th.Regs = must(ptrace.GetRegs(tid))
		th.XState = must(ptrace.GetXState(tid))
		task.Threads = append(task.Threads, th)
	}
	defer func() {
		for _, tid := range tids {
			ptrace.Detach(tid, 0)
		}
	}()

	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	page := make([]byte, image.PageSize)
	filePage := make([]byte, image.PageSize)
	for _, m := range must(proc.Maps(pid)) {
		v := &image.VMA{Start: m.Start, End: m.End, Perms: m.Perms, Offset: m.Offset, Dev: m.Dev,
			Inode: m.Inode, Name: m.Name, Kind: vmaKind(m.Name), Flags: m.Flags}
		task.VMAs = append(task.VMAs, v)
		if v.Kind == image.VMAVvar || v.Kind == image.VMAVsyscall {
			continue
		}
		var file *os.File
		if v.Kind == image.VMAFile {
			file, _ = os.Open(v.Name)
		}
		for a := v.Start; a < v.End; a += image.PageSize {
			if _, err := mem.ReadAt(page, int64(a)); err != nil {
				continue
			}
			if bytes.Equal(page, make([]byte, image.PageSize)) {
				continue
			}
			if file != nil {
				clear(filePage)
				file.ReadAt(filePage, int64(v.Offset+a-v.Start))
				if bytes.Equal(page, filePage) {
					continue
				}
			}
			v.Pages = append(v.Pages, image.PageRef{Index: uint32((a - v.Start) / image.PageSize), Hash: src.put(page)})
		}
		if file != nil {
			file.Close()
		}
	}
	return task
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// writeCore writes the core file of task to a file and returns its path.
func writeCore(t *testing.T, task *image.Task, src image.PageSource) string {
	t.Helper()
	cf := image.NewCoreFile(task, src)
	size, err := cf.Size()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "core")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Odd-sized reads exercise the offset mapping.
	buf := make([]byte, 100000)
	for off := int64(0); off < size; {
		n, err := cf.ReadAt(buf, off)
		if n == 0 && err != nil {
			t.Fatalf("core ReadAt %d: %v", off, err)
		}
		f.Write(buf[:n])
		off += int64(n)
	}
	if n, err := cf.ReadAt(buf, size); n != 0 || err != io.EOF {
		t.Fatalf("read at end: %d, %v", n, err)
	}
	return p
}

func gdbRun(t *testing.T, exe, core string, cmds ...string) string {
	t.Helper()
	if _, err := exec.LookPath("gdb"); err != nil {
		t.Skip("no gdb")
	}
	args := []string{"-nx", "-batch"}
	for _, c := range cmds {
		args = append(args, "-ex", c)
	}
	args = append(args, exe, core)
	out, err := exec.Command("gdb", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("gdb: %v\n%s", err, out)
	}
	return string(out)
}

func TestCoreFileGDB(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (ptrace, /proc/<pid>/mem)")
	}
	exe := buildProg(t)
	cmd := startProg(t, exe)
	src := &memSource{pages: map[image.Hash][]byte{}}
	task := snapshot(t, cmd.Process.Pid, src)
	core := writeCore(t, task, src)

	// The ELF structure.
	ef, err := elf.Open(core)
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	if ef.Type != elf.ET_CORE || ef.Machine != elf.EM_X86_64 {
		t.Fatalf("type %v machine %v", ef.Type, ef.Machine)
	}
	var notes *elf.Prog
	loads := 0
	for _, p := range ef.Progs {
		switch p.Type {
		case elf.PT_NOTE:
			notes = p
		case elf.PT_LOAD:
			loads++
		}
	}
	if notes == nil {
		t.Fatal("no PT_NOTE")
	}
	types := noteTypes(t, notes)
	// NT_X86_XSTATE follows each NT_FPREGSET only when the XSAVE layout is
	// the standard one gdb knows (not on AMD CPUs without MPX).
	var others []uint32
	xstate := 0
	for _, ty := range types {
		if ty == 0x202 {
			xstate++
		} else {
			others = append(others, ty)
		}
	}
	if want := fmt.Sprint([]uint32{1, 3, 6, 0x46494c45, 2, 1, 2}); fmt.Sprint(others) != want || (xstate != 0 && xstate != 2) {
		t.Errorf("notes %x, want %s with 0 or 2 NT_X86_XSTATE", types, want)
	}
	vvar := 0
	for _, v := range task.VMAs {
		if v.Kind == image.VMAVvar || v.Kind == image.VMAVsyscall {
			vvar++
		}
	}
	if loads != len(task.VMAs)-vvar {
		t.Errorf("%d PT_LOAD for %d vmas (%d vvar)", loads, len(task.VMAs), vvar)
	}

	out := gdbRun(t, exe, core, "bt", "print global_counter", "print heapbuf[4242]", "thread apply all bt")
	t.Logf("gdb:\n%s", out)
	if strings.Contains(out, "warning") {
		t.Errorf("gdb warns")
	}
	for _, w := range []string{"leaf (depth=8)", "middle (x=7)", "outer ()", "main ()", "= 43", "= 65 'A'", "spin"} {
		if !strings.Contains(out, w) {
			t.Errorf("gdb output lacks %q", w)
		}
	}
}

func noteTypes(t *testing.T, p *elf.Prog) []uint32 {
	b, err := io.ReadAll(p.Open())
	if err != nil {
		t.Fatal(err)
	}
	var types []uint32
	for len(b) >= 12 {
		le := binary.LittleEndian
		nsz, dsz, typ := le.Uint32(b), le.Uint32(b[4:]), le.Uint32(b[8:])
		types = append(types, typ)
		b = b[12+(nsz+3)&^3+(dsz+3)&^3:]
	}
	return types
}

// A file-backed vma whose file is gone reads zeros in its holes; one that
// is still there reads the file.
func TestCoreFileHolesFromFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lib.so")
	content := bytes.Repeat([]byte("0123456789abcdef"), 3*image.PageSize/16)
	os.WriteFile(path, content, 0o644)
	var st unix.Stat_t
	unix.Stat(path, &st)
	src := &memSource{pages: map[image.Hash][]byte{}}
	saved := bytes.Repeat([]byte{'S'}, image.PageSize)
	v := &image.VMA{Start: 0x10000, End: 0x13000, Perms: "rw-p", Offset: 0, Inode: st.Ino, Name: path, Kind: image.VMAFile,
		Pages: []image.PageRef{{Index: 1, Hash: src.put(saved)}}}
	anon := &image.VMA{Start: 0x20000, End: 0x22000, Perms: "rw-p", Kind: image.VMAAnon,
		Pages: []image.PageRef{{Index: 1, Hash: src.put(saved)}}}
	ro := &image.VMA{Start: 0x30000, End: 0x32000, Perms: "r--p", Inode: st.Ino, Name: path, Kind: image.VMAFile}
	task := &image.Task{PID: 1, Comm: "x", Threads: []*image.Thread{{TID: 1}}, VMAs: []*image.VMA{v, anon, ro}}

	check := func(wantFile []byte) {
		core := writeCore(t, task, src)
		ef, err := elf.Open(core)
		if err != nil {
			t.Fatal(err)
		}
		defer ef.Close()
		var got [][]byte
		for _, p := range ef.Progs {
			if p.Type == elf.PT_LOAD {
				b, _ := io.ReadAll(p.Open())
				got = append(got, b)
			}
		}
		if len(got) != 3 {
			t.Fatalf("%d loads", len(got))
		}
		want := append(append(append([]byte(nil), wantFile[:image.PageSize]...), saved...), wantFile[2*image.PageSize:]...)
		if !bytes.Equal(got[0], want) {
			t.Error("file vma content differs")
		}
		if !bytes.Equal(got[1], append(make([]byte, image.PageSize), saved...)) {
			t.Error("anon vma content differs")
		}
		// A read-only file vma without saved pages: only its first page
		// (ELF headers, build-id) is in the core.
		if !bytes.Equal(got[2], wantFile[:image.PageSize]) {
			t.Errorf("read-only file vma has %d bytes of data, want its first page", len(got[2]))
		}
	}
	check(content)

	// Sparse: headers and the file vma are data, the anon vma has a hole
	// of one page, then data.
	cf := image.NewCoreFile(task, src).(image.SparseFile)
	size, _ := cf.Size()
	h := cf.NextHole(0)
	if h >= size {
		t.Fatalf("first hole at %d", h)
	}
	d, ok := cf.NextData(h)
	if !ok || d <= h {
		t.Fatalf("data after the first hole at %d: %d %v", h, d, ok)
	}
	// The anon vma (second segment) starts with a hole page then data.
	ef, _ := elf.Open(writeCore(t, task, src))
	anonOff := int64(ef.Progs[2].Off)
	ef.Close()
	if got := cf.NextHole(anonOff); got != anonOff {
		t.Errorf("NextHole(anon start %d) = %d", anonOff, got)
	}
	if got, ok := cf.NextData(anonOff); !ok || got != anonOff+image.PageSize {
		t.Errorf("NextData(anon start) = %d %v, want %d", got, ok, anonOff+image.PageSize)
	}
	if got := cf.NextHole(anonOff + image.PageSize); got != size {
		t.Errorf("NextHole(anon data) = %d, want end %d", got, size)
	}
	if _, ok := cf.NextData(size); ok {
		t.Error("data at the end")
	}
	os.Remove(path)
	check(make([]byte, len(content)))
}
