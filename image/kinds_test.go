package image

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// kernelFDs are fds of every typed kind as a format-2 tree (or an older
// store manifest) holds them: the kernel's own fdinfo lines.
func kernelFDs() []*FD {
	return []*FD{
		{Num: 10, Kind: FDEventfd, Path: "anon_inode:[eventfd]", Flags: 0o2004002, Extra: []string{"mnt_id:\t15", "ino:\t1057",
			"eventfd-count:                5", "eventfd-id: 3", "eventfd-semaphore: 1"}},
		{Num: 11, Kind: FDEpoll, Path: "anon_inode:[eventpoll]", Flags: 0o2000002, Extra: []string{"mnt_id:\t15", "ino:\t1057",
			"tfd:       10 events:       19 data:                7  pos:0 ino:421 sdev:f",
			"tfd:       12 events: 80000001 data:      100000000ff  pos:0 ino:421 sdev:f"}},
		{Num: 12, Kind: FDTimerfd, Path: "anon_inode:[timerfd]", Flags: 0o2000002, Extra: []string{"mnt_id:\t15", "ino:\t1057",
			"clockid: 1", "ticks: 3", "settime flags: 01", "it_value: (0, 499996183)", "it_interval: (2, 500000000)"}},
		{Num: 13, Kind: FDSignalfd, Path: "anon_inode:[signalfd]", Flags: 0o2004002, Extra: []string{"mnt_id:\t15", "ino:\t1057",
			"sigmask:\t0000000000000a00"}},
		{Num: 14, Kind: FDInotify, Path: "anon_inode:inotify", Flags: 0o2004000, Extra: []string{"mnt_id:\t15", "ino:\t1057",
			"inotify wd:1 ino:9a60d2 sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:d2609a002e99f858",
			`inotify-watch: wd=1 mask=0x2 path="/tmp/w"`}},
		{Num: 15, Kind: FDPidfd, Path: "anon_inode:[pidfd]", Flags: 0o2000002, Extra: []string{"mnt_id:\t15", "ino:\t1057",
			"Pid:\t2981", "NSpid:\t2981\t1"}},
	}
}

// TestKindSchemas: the kernel's lines of each typed fd kind parse into its
// struct, render as the format-3 lines, and those read back strictly to the
// same struct.
func TestKindSchemas(t *testing.T) {
	fds := kernelFDs()
	want := []string{
		"mnt_id:\t15|ino:\t1057|eventfd-count: 0x5|eventfd-semaphore: 1",
		"mnt_id:\t15|ino:\t1057|tfd: 10 events: 0x19 data: 0x7|tfd: 12 events: 0x80000001 data: 0x100000000ff",
		"mnt_id:\t15|ino:\t1057|clockid: 1|ticks: 3|settime_flags: 0x1|it_value: 0.499996183|it_interval: 2.500000000",
		"mnt_id:\t15|ino:\t1057|sigmask: 0x0000000000000a00",
		"mnt_id:\t15|ino:\t1057|" + `inotify-watch: wd=1 mask=0x2 path="/tmp/w"`,
		"mnt_id:\t15|ino:\t1057|Pid: 2981",
	}
	for i, f := range fds {
		if _, err := canonFD(f, true); err == nil && i < 3 { // eventfd-id, kernel tfd and timerfd spellings
			t.Errorf("%s: kernel lines read strictly", f.Kind)
		}
		got, err := canonFD(f, false)
		if err != nil {
			t.Fatalf("%s: %v", f.Kind, err)
		}
		if strings.Join(got, "|") != want[i] {
			t.Errorf("%s: lines\n%q, want\n%q", f.Kind, strings.Join(got, "|"), want[i])
		}
		typed := &FD{Kind: f.Kind, Extra: got}
		again, err := canonFD(typed, true)
		if err != nil || !slices.Equal(again, got) {
			t.Errorf("%s: typed lines do not read back strictly: %q %v", f.Kind, again, err)
		}
	}
	tm, _ := ParseTimerfd(fds[2], false)
	if tm != (Timerfd{Clock: 1, Ticks: 3, SettimeFlags: 1, Value: Timespec{0, 499996183}, Interval: Timespec{2, 5e8}}) {
		t.Errorf("timerfd %+v", tm)
	}
	e, _ := ParseEpoll(fds[1], false)
	if !slices.Equal(e.Watches, []EpollWatch{{10, 0x19, 7}, {12, 0x80000001, 0x100000000ff}}) {
		t.Errorf("epoll %+v", e)
	}
}

// TestKindsLoadFormats: a tree with the kernel's lines (format 2) loads,
// typed; written again it is format 3, whose Load refuses a kernel line
// or an unknown key in a kind's lines or an object's info.
func TestKindsLoadFormats(t *testing.T) {
	src := memSource{}
	c := sampleCheckpoint(src)
	c.Tasks[0].FDs = append(c.Tasks[0].FDs, kernelFDs()...)
	dir := t.TempDir()
	if err := WriteTree(dir, Render(c, src)); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range got.Tasks[0].FDs[3:] {
		if _, err := canonFD(f, true); err != nil {
			t.Errorf("fd %d (%s): loaded lines %q not format 3: %v", f.Num, f.Kind, f.Extra, err)
		}
	}
	// The same tree as format 2 (kernel lines verbatim) loads too.
	old := t.TempDir()
	tree := Render(c, src)
	if err := WriteTree(old, tree); err != nil {
		t.Fatal(err)
	}
	edit(t, old, "info", "format: 3", "format: 2")
	writeLines(t, old, "tasks/100/fdinfo/11", "kind: epoll", `path: "anon_inode:[eventpoll]"`, "flags: 2000002", "pos: 0", "size: 0",
		"deleted: 0", "cloexec: 1", "tfd:       10 events:       19 data:                7  pos:0 ino:421 sdev:f")
	two, err := Load(old)
	if err != nil {
		t.Fatalf("format 2: %v", err)
	}
	if e, err := ParseEpoll(two.Tasks[0].FDs[4], true); err != nil || !reflect.DeepEqual(e.Watches, []EpollWatch{{10, 0x19, 7}}) {
		t.Errorf("format-2 epoll: %+v %v", e, err)
	}
	for _, c := range []struct{ name, rel, old, new, want string }{
		{"kernel tfd line", "tasks/100/fdinfo/11", "data: 0x7\n", "data: 0x7  pos:0 ino:421 sdev:f\n", "bad watch line"},
		{"unknown fd key", "tasks/100/fdinfo/13", "sigmask:", "blocked: 1\nsigmask:", `unknown key "blocked"`},
		{"bad count", "tasks/100/fdinfo/10", "eventfd-count: 0x5", "eventfd-count: five", "eventfd-count: bad number"},
		{"kernel line on a file", "tasks/100/fdinfo/7", "ino:\t3\n", "ino:\t3\nlock:\t1: FLOCK  ADVISORY  WRITE 99 fd:01:3 0 EOF\n", `unknown key "lock"`},
		{"unknown object key", "objects/pipe-99/info", "capacity:", "colour: red\ncapacity:", `unknown key "colour"`},
		{"object missing key", "objects/pipe-99/info", "capacity: 65536\n", "", `missing key "capacity"`},
		{"unknown object kind", "objects/pipe-99/info", "kind: pipe", "kind: tube", "unknown object kind"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := t.TempDir()
			if err := WriteTree(d, Render(got, src)); err != nil {
				t.Fatal(err)
			}
			edit(t, d, c.rel, c.old, c.new)
			loadErr(t, d, c.want)
		})
	}
}

func writeLines(t *testing.T, dir, rel string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, rel), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestObjectSchemas: each object kind's info renders, and reads back
// strictly, to the same struct; data that disagrees with the info (message
// lengths, data ranges) is refused.
func TestObjectSchemas(t *testing.T) {
	us := &UnixSocket{Ino: 9, Type: 2, State: UnixUnconnected, Name: "/run/a b", Dir: "", File: &UnixSocketFile{Exists: true, Mode: 0o755, UID: 1, GID: 2},
		Opts: &UnixSocketOpts{Sndbuf: 1, Rcvbuf: 2}, Msgs: []UnixMsg{{Len: 2, Sender: "@x"}, {Len: 0}}}
	o := &Object{ID: "unix-9", Kind: ObjUnixSocket, Info: us.Info(), Data: []byte("ab")}
	back, err := ParseUnixSocket(o, true)
	if err != nil || !reflect.DeepEqual(back, us) {
		t.Errorf("unix socket: %+v %v, want %+v", back, err, us)
	}
	o.Data = []byte("abc")
	if _, err := ParseUnixSocket(o, true); err == nil {
		t.Error("unix socket: data longer than its messages accepted")
	}
	l := &UnixSocket{Ino: 1, Type: 1, State: UnixListen, Backlog: 5, Pending: []uint64{4, 6}}
	if back, err := ParseUnixSocket(&Object{ID: "unix-1", Info: l.Info()}, true); err != nil || !reflect.DeepEqual(back, l) {
		t.Errorf("listener: %+v %v", back, err)
	}
	m := &Memfd{Name: "buf", Size: 8192, Mode: 0o600, Seals: 0xf, Dev: "00:01", Ino: 5, DataRanges: []DataRange{{0, 10}, {4096, 4100}}}
	if back, err := ParseMemfd(&Object{ID: "memfd-5", Info: m.Info(), Data: make([]byte, 14)}, true); err != nil || !reflect.DeepEqual(back, m) {
		t.Errorf("memfd: %+v %v", back, err)
	}
	s := &SysVShm{Key: -5, ShmID: 3, Size: 4096, Mode: 0o640, Dest: true, UID: 1, GID: 2, CUID: 3, CGID: 4, Dev: "00:01"}
	if back, err := ParseSysVShm(&Object{ID: "sysv-3", Info: s.Info()}, true); err != nil || !reflect.DeepEqual(back, s) {
		t.Errorf("sysv: %+v %v", back, err)
	}
	if _, err := ParseSysVShm(&Object{ID: "sysv-3", Info: s.Info(), Data: []byte("x")}, true); err == nil {
		t.Error("sysv: data without ranges accepted")
	}
	d := &DeletedFile{Path: "/tmp/x\ny", Mode: 0o4755}
	if back, err := ParseDeletedFile(&Object{ID: "file-1", Info: d.Info()}, true); err != nil || !reflect.DeepEqual(back, d) {
		t.Errorf("deleted file: %+v %v", back, err)
	}
}

// TestRefusal: the rule dump and restore share.
func TestRefusal(t *testing.T) {
	for _, c := range []struct {
		f    *FD
		want string
	}{
		{&FD{Kind: FDOther, Path: "anon_inode:[io_uring]"}, "[io_uring]"},
		{&FD{Kind: FDInotify, Extra: []string{"inotify-unresolved: wd=4 ino=12 no file handle"}}, "an inotify watch without a path (wd=4 "},
		{&FD{Kind: FDDir, Path: "/gone", Deleted: true}, "deleted at dump time"},
		{&FD{Kind: "teapot"}, "unknown fd kind"},
		{&FD{Kind: FDEpoll, Extra: []string{"tfd: x"}}, "bad watch line"},
	} {
		err := Refusal(c.f)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.f.Kind, err, c.want)
		}
	}
	for _, f := range append(kernelFDs(), &FD{Kind: FDFile, Path: "/x", Deleted: true}, &FD{Kind: FDSocket}) {
		if err := Refusal(f); err != nil {
			t.Errorf("%s refused: %v", f.Kind, err)
		}
	}
}
