package image

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// goldenTree is a committed tree under testdata/trees/ (see its README).
func goldenTree(name string) string { return filepath.Join("..", "testdata", "trees", name) }

// checkGoldenTiny checks the model of a golden tree made by dumping
// tests/progs/tiny.c (pid 31992, run from /tmp/ckptfs-golden with stdout
// and stderr on /tmp/ckptfs-golden/ticks).
func checkGoldenTiny(t *testing.T, c *Checkpoint, name string) {
	t.Helper()
	if c.Name != name || c.RootPID != 31992 || c.Host != "vm" || len(c.Tasks) != 1 || len(c.Objects) != 0 {
		t.Fatalf("checkpoint: name %q root %d host %q tasks %d objects %d", c.Name, c.RootPID, c.Host, len(c.Tasks), len(c.Objects))
	}
	if c.Stats.PagesTotal < 3 || c.Stats.PagesZero < 1 {
		t.Errorf("stats %+v", c.Stats)
	}
	tk := c.Tasks[0]
	if tk.PID != 31992 || tk.PPID != 1 || tk.SID != 31992 || tk.PGID != 31992 || tk.Comm != "tiny" || tk.State != "S" || tk.TPGID != -1 {
		t.Errorf("task %+v", tk)
	}
	if tk.Exe != "/tmp/ckptfs-golden/tiny" || tk.Cwd != "/" || tk.Root != "/" || tk.Umask != 0o22 {
		t.Errorf("exe %q cwd %q root %q umask %o", tk.Exe, tk.Cwd, tk.Root, tk.Umask)
	}
	if string(tk.Environ) != "PATH=/usr/bin:/bin\x00" {
		t.Errorf("environ %q", tk.Environ)
	}
	if len(tk.Threads) != 1 || tk.Threads[0].TID != 31992 || tk.Threads[0].Comm != "tiny" || tk.Threads[0].Extras == nil {
		t.Fatalf("threads %+v", tk.Threads)
	}
	if tk.MM.StartCode != 0x401000 || tk.MM.EndCode != 0x40106e {
		t.Errorf("mm %+v", tk.MM)
	}
	if len(tk.FDs) != 3 {
		t.Fatalf("fds %+v", tk.FDs)
	}
	for i, want := range []struct {
		kind, path string
		flags      uint32
		pos        int64
	}{{FDChar, "/dev/null", 0o100000, 0}, {FDFile, "/tmp/ckptfs-golden/ticks", 0o100001, 30}, {FDFile, "/tmp/ckptfs-golden/ticks", 0o100001, 30}} {
		f := tk.FDs[i]
		if f.Num != i || f.Kind != want.kind || f.Path != want.path || f.Flags != want.flags || f.Pos != want.pos {
			t.Errorf("fd %d: %+v", i, f)
		}
	}
	if tk.FDs[1].OFD == "" || tk.FDs[1].OFD != tk.FDs[2].OFD {
		t.Errorf("fds 1 and 2 should share an open file description: %q %q", tk.FDs[1].OFD, tk.FDs[2].OFD)
	}
	names := []string{"/tmp/ckptfs-golden/tiny", "/tmp/ckptfs-golden/tiny", "/tmp/ckptfs-golden/tiny", "[vvar]", "[vvar_vclock]", "[vdso]", "[stack]", "[vsyscall]"}
	if len(tk.VMAs) != len(names) {
		t.Fatalf("%d vmas, want %d", len(tk.VMAs), len(names))
	}
	for i, v := range tk.VMAs {
		if v.Name != names[i] {
			t.Errorf("vma %d: name %q, want %q", i, v.Name, names[i])
		}
	}
	if v := tk.VMAs[0]; v.Start != 0x400000 || v.End != 0x401000 || v.Kind != VMAFile || v.FileSize != 8808 || v.Perms != "r--p" {
		t.Errorf("vma 0: %+v", v)
	}
	if v := tk.VMAs[7]; v.Start != 0xffffffffff600000 || v.Kind != VMAVsyscall {
		t.Errorf("vma 7: %+v", v)
	}
}

// TestLoadGoldenFormat1 reads the tree the format-1 ckptfs (no "format:"
// key in info) made of tests/progs/tiny.c: old checkpoints stay readable.
func TestLoadGoldenFormat1(t *testing.T) {
	c, err := Load(goldenTree("format1"))
	if err != nil {
		t.Fatal(err)
	}
	checkGoldenTiny(t, c, "golden-format1")
}

// TestLoadGoldenFormat2 reads the tree format 2 made of the same program:
// checkpoints of that format stay readable.
func TestLoadGoldenFormat2(t *testing.T) {
	c, err := Load(goldenTree("format2"))
	if err != nil {
		t.Fatal(err)
	}
	checkGoldenTiny(t, c, "golden-format2")
}

// TestLoadGoldenFormat3 reads the tree this format (3) made of the same
// program: a later change that cannot read it breaks today's checkpoints.
// Rendered again, it is the same tree, byte for byte, file for file.
func TestLoadGoldenFormat3(t *testing.T) {
	c, err := Load(goldenTree("format3"))
	if err != nil {
		t.Fatal(err)
	}
	checkGoldenTiny(t, c, "golden-format3")
	f := c.Tasks[0].FDs[1]
	if got := renderFDInfo(f); !bytes.Equal(got, mustRead(t, goldenTree("format3"), "tasks/31992/fdinfo/1")) {
		t.Errorf("fdinfo/1 renders as\n%s", got)
	}
}

func mustRead(t *testing.T, dir, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
