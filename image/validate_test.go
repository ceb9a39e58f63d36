package image

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sampleTree writes the sample checkpoint and returns its directory.
func sampleTree(t *testing.T) string {
	t.Helper()
	src := memSource{}
	dir := t.TempDir()
	if err := WriteTree(dir, Render(sampleCheckpoint(src), src)); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err != nil {
		t.Fatalf("sample tree: %v", err)
	}
	return dir
}

// edit replaces old with new in file rel of dir (which must contain old).
func edit(t *testing.T, dir, rel, old, new string) {
	t.Helper()
	p := filepath.Join(dir, rel)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%s does not contain %q:\n%s", rel, old, b)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// loadErr loads dir and checks that the error mentions every want.
func loadErr(t *testing.T, dir string, want ...string) {
	t.Helper()
	_, err := Load(dir)
	if err == nil {
		t.Fatalf("Load accepted the tree; want an error with %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not say %q", err, w)
		}
	}
}

func TestLoadRefusesBadValues(t *testing.T) {
	for _, c := range []struct {
		name, rel, old, new string
		want                []string
	}{
		{"duplicate path", "tasks/100/fdinfo/7", "flags:", "path: \"/etc/hostname\"\nflags:", []string{"fdinfo/7:3:", `duplicate key "path" (first on line 2)`}},
		{"duplicate status key", "tasks/100/status", "PPid: 1\n", "PPid: 1\nPPid: 1\n", []string{"status:5:", "duplicate"}},
		{"unknown key", "tasks/100/mm", "\nbrk:", "\nbogus: 1\nbrk:", []string{"mm:6:", `unknown key "bogus"`}},
		{"unquoted path", "tasks/100/fdinfo/7", `path: "/tmp/out"`, "path: /tmp/out", []string{"fdinfo/7:2:", "not a quoted string"}},
		{"bad quote", "info", `name: "n"`, `name: "n`, []string{"info:", "not a quoted string"}},
		{"negative pos", "tasks/100/fdinfo/7", "pos: 77", "pos: -1", []string{"fdinfo/7:4:", "out of range"}},
		{"negative size", "tasks/100/fdinfo/7", "size: 77", "size: -5", []string{"fdinfo/7:5:", "out of range"}},
		{"negative file size", "tasks/100/vmas/400000-401000/info", "file_size: 8192", "file_size: -1", []string{"info:9:", "out of range"}},
		{"ppid below 0", "tasks/100/status", "PPid: 1", "PPid: -3", []string{"status:", "PPid"}},
		{"uid out of range", "tasks/100/status", "Uid: 1000 1000 1000 1000", "Uid: 1000 -1 1000 1000", []string{"status:", "Uid"}},
		{"three uids", "tasks/100/status", "Uid: 1000 1000 1000 1000", "Uid: 1000 1000 1000", []string{"Uid", "want 4"}},
		{"bad state", "tasks/100/status", "State: S", "State: Q", []string{"State"}},
		{"umask", "tasks/100/status", "Umask: 0022", "Umask: 7777", []string{"Umask"}},
		{"address above user half", "tasks/100/mm", "brk: 0x605000", "brk: 0xffff800000000000", []string{"mm:", "brk", "out of range"}},
		{"bad perms", "tasks/100/vmas/400000-401000/info", "perms: r-xp", "perms: rwxz", []string{"perms"}},
		{"bad kind", "tasks/100/vmas/400000-401000/info", "kind: file", "kind: magic", []string{"vma kind"}},
		{"bad fd kind", "tasks/100/fdinfo/7", "kind: file", "kind: magic", []string{"fd kind"}},
		{"object id with path", "tasks/100/fdinfo/8", "object: pipe-99", "object: ../../etc", []string{"fdinfo/8:", "bad id"}},
		{"cloexec disagrees", "tasks/100/fdinfo/7", "cloexec: 1", "cloexec: 0", []string{"cloexec"}},
		{"signal number", "tasks/100/sigactions", "\n13 ", "\n65 ", []string{"sigactions:", "signal 65"}},
		{"newer format", "info", "format: 3", "format: 4", []string{"tree format 4 is newer than this ckptfs reads (3); upgrade ckptfs"}},
		{"task count", "info", "tasks: 2", "tasks: 3", []string{"tasks: 3, but tasks/ holds 2"}},
		{"parent loop", "tasks/105/status", "PPid: 100", "PPid: 105", []string{"task 105: its parent 105"}},
		{"limit twice", "tasks/100/limits", "Max stack size", "Max open files", []string{"limits", "listed twice"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := sampleTree(t)
			edit(t, dir, c.rel, c.old, c.new)
			loadErr(t, dir, c.want...)
		})
	}
}

func TestLoadRefusesBadLayout(t *testing.T) {
	t.Run("overlapping vmas", func(t *testing.T) {
		dir := sampleTree(t)
		vmas := filepath.Join(dir, "tasks/100/vmas")
		if err := os.Rename(filepath.Join(vmas, "400000-401000"), filepath.Join(vmas, "600000-601000")); err != nil {
			t.Fatal(err)
		}
		edit(t, dir, "tasks/100/vmas/600000-601000/info", "start: 0x400000\nend: 0x401000", "start: 0x600000\nend: 0x601000")
		loadErr(t, dir, "overlap")
	})
	t.Run("vma above the user half", func(t *testing.T) {
		dir := sampleTree(t)
		vmas := filepath.Join(dir, "tasks/100/vmas")
		if err := os.Rename(filepath.Join(vmas, "400000-401000"), filepath.Join(vmas, "800000000000-800000001000")); err != nil {
			t.Fatal(err)
		}
		edit(t, dir, "tasks/100/vmas/800000000000-800000001000/info", "start: 0x400000\nend: 0x401000", "start: 0x800000000000\nend: 0x800000001000")
		loadErr(t, dir, "above the user address space")
	})
	t.Run("negative fd", func(t *testing.T) {
		dir := sampleTree(t)
		if err := os.Rename(filepath.Join(dir, "tasks/100/fdinfo/7"), filepath.Join(dir, "tasks/100/fdinfo/-7")); err != nil {
			t.Fatal(err)
		}
		loadErr(t, dir, "fdinfo", `"-7"`)
	})
	t.Run("pid 0", func(t *testing.T) {
		dir := sampleTree(t)
		if err := os.Rename(filepath.Join(dir, "tasks/105"), filepath.Join(dir, "tasks/0")); err != nil {
			t.Fatal(err)
		}
		loadErr(t, dir, "tasks", `"0"`)
	})
	t.Run("bad siginfo", func(t *testing.T) {
		dir := sampleTree(t)
		rec := make([]byte, 128)
		rec[0] = 99
		p := filepath.Join(dir, "tasks/100/sigpending")
		if err := os.WriteFile(p, rec, 0o600); err != nil {
			t.Fatal(err)
		}
		loadErr(t, dir, p, "signal 99")
	})
	t.Run("status and symlink disagree", func(t *testing.T) {
		dir := sampleTree(t)
		exe := filepath.Join(dir, "tasks/100/exe")
		os.Remove(exe)
		if err := os.Symlink("/etc/passwd", exe); err != nil {
			t.Fatal(err)
		}
		loadErr(t, dir, exe, "/etc/passwd", "Exe")
	})
}

// TestLoadDoesNotFollow: a FIFO, device or symlink in place of a tree file
// is an error naming it, never a hang or another file's contents.
func TestLoadDoesNotFollow(t *testing.T) {
	for _, rel := range []string{"tasks/100/cmdline", "tasks/100/status", "info", "tasks/100/vmas/600000-605000/pages", "objects/pipe-99/data"} {
		t.Run("fifo "+rel, func(t *testing.T) {
			dir := sampleTree(t)
			p := filepath.Join(dir, rel)
			os.Remove(p)
			if err := unix.Mkfifo(p, 0o600); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { _, err := Load(dir); done <- err }()
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "FIFO") {
					t.Fatalf("Load: %v", err)
				}
			case <-time.After(time.Minute): // a hang, not a slow machine
				t.Fatal("Load hangs on a FIFO")
			}
		})
	}
	t.Run("symlink file", func(t *testing.T) {
		dir := sampleTree(t)
		p := filepath.Join(dir, "tasks/100/environ")
		os.Remove(p)
		if err := os.Symlink("/proc/self/environ", p); err != nil {
			t.Fatal(err)
		}
		loadErr(t, dir, p, "symlink")
	})
	t.Run("symlink dir", func(t *testing.T) {
		dir := sampleTree(t)
		other := sampleTree(t)
		p := filepath.Join(dir, "tasks/100/threads")
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(other, "tasks/100/threads"), p); err != nil {
			t.Fatal(err)
		}
		loadErr(t, dir, p, "symlink")
	})
	t.Run("device", func(t *testing.T) {
		dir := sampleTree(t)
		p := filepath.Join(dir, "tasks/100/auxv")
		os.Remove(p)
		if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 5))); err != nil { // /dev/zero
			t.Skipf("mknod needs CAP_MKNOD: %v", err)
		}
		loadErr(t, dir, p, "character device")
	})
	t.Run("OpenTreeFile", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "pages")
		if err := unix.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		if f, err := OpenTreeFile(p); err == nil || !strings.Contains(err.Error(), "FIFO") {
			f.Close()
			t.Fatalf("OpenTreeFile on a FIFO: %v", err)
		}
		os.Remove(p)
		if err := os.Symlink("/etc/hostname", p); err != nil {
			t.Fatal(err)
		}
		if f, err := OpenTreeFile(p); err == nil {
			f.Close()
			t.Fatal("OpenTreeFile followed a symlink")
		}
	})
}

// TestLegacyRefusesDuplicates: a format-1 tree edited to repeat a key (the
// newline file name of format 1 reads so) is refused too.
func TestLegacyRefusesDuplicates(t *testing.T) {
	dir := t.TempDir()
	if err := copyTree(goldenTree("format1"), dir); err != nil {
		t.Fatal(err)
	}
	edit(t, dir, "tasks/31992/fdinfo/1", "path: /tmp/ckptfs-golden/ticks\n", "path: /tmp/a\npath: /etc/hostname\n")
	loadErr(t, dir, filepath.Join(dir, "tasks/31992/fdinfo/1")+":3:", `duplicate key "path"`)
}

// copyTree copies a tree like cp -a (files, dirs, symlinks).
func copyTree(from, to string) error {
	return filepath.Walk(from, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		switch {
		case info.IsDir():
			return os.MkdirAll(dst, 0o755)
		case info.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, dst)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, 0o644)
		}
	})
}

func TestLoadRefusesBadCounts(t *testing.T) {
	for _, c := range []struct {
		name, rel, old, new string
		want                []string
	}{
		{"thread count", "tasks/100/status", "Threads: 2", "Threads: 3", []string{"Threads: 3, but threads/ holds 2"}},
		{"soft above hard", "tasks/100/limits", "1024                 4096", "8192                 4096", []string{"limits", "soft limit above hard"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := sampleTree(t)
			edit(t, dir, c.rel, c.old, c.new)
			loadErr(t, dir, c.want...)
		})
	}
	dir := sampleTree(t)
	p := filepath.Join(dir, "tasks/100/auxv")
	if err := os.WriteFile(p, make([]byte, 17), 0o600); err != nil {
		t.Fatal(err)
	}
	loadErr(t, dir, p, "17 bytes")
}
