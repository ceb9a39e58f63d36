package image

import (
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// hostile are strings a program controls (file, socket, memfd, thread
// names) that a naive "key: value" writer would let start lines of their
// own or lose bytes of.
var hostile = []string{
	"a\npath: /etc/hostname",
	"key: value",
	`"quoted" and \"escaped\"`,
	`back\slash\`,
	"\xff\xfe invalid \xc3 utf-8",
	"  leading and trailing spaces  ",
	"tab\tcr\rvt\v",
	"\n",
	"ü ✓ unicode",
	"inotify-watch: wd=1 mask=0x2 path=/etc/shadow",
}

// hostilePath makes a hostile string an absolute path (symlinks hold any
// byte but NUL).
func hostilePath(i int) string { return "/tmp/" + hostile[i%len(hostile)] }

func hostileCheckpoint(src memSource) *Checkpoint {
	c := sampleCheckpoint(src)
	h := func(i int) string { return hostile[i%len(hostile)] }
	c.Name, c.Host, c.Kernel = h(0), h(1), h(2)
	root := c.Tasks[0]
	root.Comm = h(3)
	root.Exe, root.Cwd, root.Root = hostilePath(4), hostilePath(5), hostilePath(0)
	root.Threads[0].Comm = h(6)
	root.Threads[1].Comm = h(7)
	root.FDs[1].Path = hostilePath(0)
	root.FDs[2].Path = h(8)
	root.VMAs[0].Name = hostilePath(9)
	root.VMAs[1].Name = h(1)
	c.Tasks[1].Comm = h(4)
	inotify := &FD{Num: 9, Kind: FDInotify, Path: "anon_inode:inotify", Flags: 0o2000000, Ino: 5,
		Extra: []string{"ino:\t5"}}
	for i := range hostile {
		inotify.Extra = append(inotify.Extra, InotifyWatch{WD: i + 1, Mask: 0x2, Path: hostilePath(i)}.Line())
	}
	root.FDs = append(root.FDs, inotify)
	c.Objects = append(c.Objects,
		&Object{ID: "file-7", Kind: ObjDeletedFile, Info: []string{TextLine("path", hostilePath(0)), "mode: 644"}, Data: []byte("x")},
		&Object{ID: "memfd-8", Kind: ObjMemfd, Info: []string{TextLine("name", h(2)), "size: 0", "mode: 600", "seals: 0x0",
			"dev: 00:01", "ino: 8", "data_ranges: "}},
		&Object{ID: "unix-9", Kind: ObjUnixSocket, Info: []string{"ino: 9", "type: 2", "state: 7", "peer: 0", TextLine("name", h(0)), TextLine("dir", h(3)),
			MsgLine(1, h(5)), MsgLine(0, ""), MsgLine(2, "-")}, Data: []byte("abc")})
	return c
}

// TestRoundTripHostileStrings: every free-text field comes back exactly,
// whatever bytes it holds, and none of them adds a line to its file.
func TestRoundTripHostileStrings(t *testing.T) {
	src := memSource{}
	want := hostileCheckpoint(src)
	dir := t.TempDir()
	if err := WriteTree(dir, Render(want, src)); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range want.Tasks {
		for _, v := range tk.VMAs {
			v.Pages = nil
		}
	}
	normalize(want)
	normalize(got)
	for _, o := range got.Objects {
		if len(o.Data) == 0 {
			o.Data = nil
		}
	}
	sort.Slice(want.Objects, func(i, j int) bool { return want.Objects[i].ID < want.Objects[j].ID }) // Load lists objects/ by name
	if !reflect.DeepEqual(want, got) {
		for i := range want.Tasks {
			if !reflect.DeepEqual(want.Tasks[i], got.Tasks[i]) {
				t.Errorf("task %d differs:\nwant %+v\n got %+v", want.Tasks[i].PID, *want.Tasks[i], *got.Tasks[i])
			}
		}
		for i := range want.Objects {
			if !reflect.DeepEqual(want.Objects[i], got.Objects[i]) {
				t.Errorf("object %d differs:\nwant %q\n got %q", i, want.Objects[i].Info, got.Objects[i].Info)
			}
		}
		t.Errorf("name %q host %q kernel %q", got.Name, got.Host, got.Kernel)
		t.Fatal("round trip differs")
	}
	b, err := os.ReadFile(filepath.Join(dir, "tasks/100/fdinfo/7"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\npath:"); n != 1 {
		t.Errorf("fdinfo/7 has %d path lines:\n%s", n, b)
	}
	ws, err := InotifyWatches(got.Tasks[0].FDs[3])
	if err != nil || len(ws) != len(hostile) || ws[0].Path != hostilePath(0) {
		t.Errorf("inotify watches %+v, %v", ws, err)
	}
	if d, err := ParseDeletedFile(got.Object("file-7"), true); err != nil || d.Path != hostilePath(0) {
		t.Errorf("deleted file %+v, %v", d, err)
	}
}

// TestPrivateModes: files holding memory or secrets are 0400 in a written
// tree (what `cp -a` of a mount keeps), others 0444/0644.
func TestPrivateModes(t *testing.T) {
	src := memSource{}
	c := hostileCheckpoint(src)
	r := Render(c, src)
	dir := t.TempDir()
	if err := WriteTree(dir, r); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"tasks/100/environ", "tasks/100/auxv", "tasks/100/sigpending", "tasks/100/core",
		"tasks/100/threads/100/regs", "tasks/100/threads/100/xstate", "tasks/100/threads/101/sigpending",
		"tasks/100/vmas/600000-605000/pages", "tasks/100/vmas/600000-605000/pagemap", "objects/file-7/data"} {
		st, err := os.Lstat(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o400 {
			t.Errorf("%s: mode %v, want 0400", rel, st.Mode())
		}
	}
	for _, rel := range []string{"info", "tasks/100/status", "tasks/100/maps", "tasks/100/cmdline", "objects/file-7/info"} {
		st, err := os.Lstat(filepath.Join(dir, rel))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o044 == 0 {
			t.Errorf("%s: mode %v, want readable", rel, st.Mode())
		}
	}
	tasks := r.Lookup("tasks").(*Dir).Lookup("100").(*Dir)
	if Mode(tasks.Lookup("environ")) != 0o400 || Mode(tasks.Lookup("status")) != 0o444 || Mode(tasks) != os.ModeDir|0o555 {
		t.Errorf("Mode: environ %v status %v dir %v", Mode(tasks.Lookup("environ")), Mode(tasks.Lookup("status")), Mode(tasks))
	}
}

// TestRenderOldModel: a model made before format 2 (raw paths and names in
// object and inotify lines, as a store's older manifests hold) renders as a
// valid format-2 tree with the same values.
func TestRenderOldModel(t *testing.T) {
	src := memSource{}
	c := sampleCheckpoint(src)
	c.Objects = append(c.Objects,
		&Object{ID: "file-7", Kind: ObjDeletedFile, Info: []string{"path: /tmp/old file", "mode: 644"}},
		&Object{ID: "unix-9", Kind: ObjUnixSocket, Info: []string{"ino: 9", "type: 2", "state: 7", "peer: 0", "name: /tmp/sock", "dir: /home/u",
			"msg: 1 /tmp/peer", "msg: 2 -", `msg: 3 "@\x00abstract"`}, Data: []byte("abcdef")})
	c.Tasks[0].FDs = append(c.Tasks[0].FDs, &FD{Num: 9, Kind: FDInotify, Path: "anon_inode:inotify", Flags: 0o2000000,
		Extra: []string{"inotify-watch: wd=1 mask=0x2 path=/tmp/watched dir"}})
	dir := t.TempDir()
	if err := WriteTree(dir, Render(c, src)); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := ParseDeletedFile(got.Object("file-7"), true); err != nil || d.Path != "/tmp/old file" {
		t.Errorf("path %+v %v", d, err)
	}
	u := got.Object("unix-9")
	if us, err := ParseUnixSocket(u, true); err != nil || us.Name != "/tmp/sock" {
		t.Errorf("name %+v %v", us, err)
	}
	want := []string{"ino: 9", "type: 2", "state: 7", "peer: 0", `name: "/tmp/sock"`, `dir: "/home/u"`, `msg: 1 "/tmp/peer"`, "msg: 2 -", `msg: 3 "@\x00abstract"`}
	if !reflect.DeepEqual(u.Info, want) {
		t.Errorf("unix info %q, want %q", u.Info, want)
	}
	ws, err := InotifyWatches(got.Tasks[0].FDs[3])
	if err != nil || len(ws) != 1 || ws[0].Path != "/tmp/watched dir" {
		t.Errorf("watches %+v %v", ws, err)
	}
}
