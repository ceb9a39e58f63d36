package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startFDKinds starts tests/progs/fdkinds.c on dir and returns it with the
// fd numbers it printed (inotify, timerfd, fifo_r, fifo_w, signalfd).
func startFDKinds(t *testing.T, dir string, args ...string) (*program, map[string]int) {
	t.Helper()
	p := startArgv(t, "fdkinds", append([]string{buildProg(t, "fdkinds"), dir}, args...))
	b, _ := os.ReadFile(p.Out)
	m := regexp.MustCompile(`fds (.*) wds=\S+ ok`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("fdkinds did not set up; output:\n%s", b)
	}
	fds := map[string]int{}
	for _, kv := range strings.Fields(m[1]) {
		k, v, _ := strings.Cut(kv, "=")
		fds[k], _ = strconv.Atoi(v)
	}
	if kid := fds["kid"]; kid > 0 {
		t.Cleanup(func() {
			unix.Kill(kid, unix.SIGKILL)
			p.kill() // so the zombie goes to a reaper
			waitGone(t, kid)
		})
	}
	return p, fds
}

// waitLine waits until the program printed a line containing s.
func (p *program) waitLine(t *testing.T, s string) string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		b, _ := os.ReadFile(p.Out)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, s) {
				return l
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(p.Out)
	t.Fatalf("%s (pid %d) printed no %q in 20s; output:\n%s", p.Name, p.Pid, s, b)
	return ""
}

// fdinfoValue returns the value of "key: value" in an fdinfo file.
func fdinfoValue(info, key string) string {
	for _, l := range strings.Split(info, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			v = strings.TrimSpace(v)
			if u, err := strconv.Unquote(v); err == nil && strings.HasPrefix(v, `"`) {
				return u // free text (a path) is quoted
			}
			return v
		}
	}
	return ""
}

// TestFDKinds dumps (--kill) a program holding an inotify fd with a wd gap,
// a timerfd with unread expirations, a named FIFO with bytes in flight and
// a signalfd with pending signals, checks the FUSE tree says what each fd
// is, restores it from the mount and lets the program check each fd.
func TestFDKinds(t *testing.T) {
	dir := t.TempDir()
	p, fds := startFDKinds(t, dir)
	p.waitTicks(t, 8) // ~80 timer expirations go unread
	pid, kid := p.Pid, fds["kid"]
	if pids := treePids(pid); len(pids) != 2 || pids[1] != kid {
		t.Fatalf("tree %v, want %d and its child %d", pids, pid, kid)
	}

	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	id := lastLine(ckptfs(t, "dump", "-s", m.store, "--kill", itoa(pid)))
	waitGone(t, pid)
	waitGone(t, kid)

	fdinfoOf := func(task int, name string) string {
		b, err := os.ReadFile(filepath.Join(m.mnt, id, "tasks", itoa(task), "fdinfo", itoa(fds[name])))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	fdinfo := func(name string) string { return fdinfoOf(pid, name) }
	in := fdinfo("inotify")
	if fdinfoValue(in, "kind") != "inotify" ||
		!strings.Contains(in, "inotify-watch: wd=1 mask=0x100 path="+strconv.Quote(filepath.Join(dir, "wdir"))+"\n") ||
		!strings.Contains(in, "inotify-watch: wd=3 mask=0x2 path="+strconv.Quote(filepath.Join(dir, "watched"))+"\n") ||
		strings.Contains(in, "wd=2 ") {
		t.Errorf("inotify fdinfo:\n%s", in)
	}
	tf := fdinfo("timerfd")
	ticks, err := strconv.ParseUint(fdinfoValue(tf, "ticks"), 10, 64)
	if fdinfoValue(tf, "kind") != "timerfd" || err != nil || ticks < 50 {
		t.Errorf("timerfd fdinfo (want ticks >= 50):\n%s", tf)
	}
	for _, end := range []string{"fifo_r", "fifo_w"} {
		fi := fdinfo(end)
		if fdinfoValue(fi, "kind") != "pipe" || fdinfoValue(fi, "path") != filepath.Join(dir, "fifo") ||
			!strings.HasPrefix(fdinfoValue(fi, "object"), "pipe-") {
			t.Errorf("%s fdinfo:\n%s", end, fi)
		}
	}
	if sf := fdinfo("signalfd"); fdinfoValue(sf, "kind") != "signalfd" || fdinfoValue(sf, "sigmask") != "0x0000000000000a00" {
		t.Errorf("signalfd fdinfo:\n%s", sf)
	}

	// The eventfd, its dup and the child's copy are one open file
	// description, as is every fd the child inherited.
	ofd := fdinfoValue(fdinfo("eventfd"), "ofd")
	if fdinfoValue(fdinfo("eventfd"), "kind") != "eventfd" || ofd == "" || fdinfoValue(fdinfo("eventfd_dup"), "ofd") != ofd ||
		fdinfoValue(fdinfoOf(kid, "eventfd"), "ofd") != ofd {
		t.Errorf("eventfd fdinfo (ofd %q):\n%s", ofd, fdinfo("eventfd"))
	}
	for _, name := range []string{"inotify", "timerfd", "signalfd"} {
		if o := fdinfoValue(fdinfo(name), "ofd"); o == "" || o != fdinfoValue(fdinfoOf(kid, name), "ofd") {
			t.Errorf("%s of the child is not the parent's:\n%s", name, fdinfoOf(kid, name))
		}
	}

	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	out, errOut, err := ckptfsErr(t, "restore", filepath.Join(m.mnt, id))
	if err != nil {
		t.Fatalf("restore: %v\n%s%s", err, out, errOut)
	}
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		waitGone(t, pid)
	})
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p.waitLine(t, " done ")
	p.checkHealthy(t)
	l := p.waitLine(t, " timerfd-read ")
	got, _ := strconv.ParseUint(strings.Fields(l)[3], 10, 64)
	if got < ticks {
		t.Errorf("timerfd read %d expirations after restore, the checkpoint has %d", got, ticks)
	}
	t.Logf("timerfd: %d expirations at dump, %d read after restore", ticks, got)
	b, _ := os.ReadFile(p.Out)
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, " tick ") && l != "" {
			t.Log(l)
		}
	}
}

// TestFDKindsInotifyPathGone: a watched path removed before the restore
// makes the restore fail, naming the path; pointed at another file in a
// copy of the checkpoint, the restore watches that one.
func TestFDKindsInotifyPathGone(t *testing.T) {
	dir := t.TempDir()
	p, fds := startFDKinds(t, dir)
	pid := p.Pid
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	id := lastLine(ckptfs(t, "dump", "-s", m.store, "--kill", itoa(pid)))
	waitGone(t, pid)
	waitGone(t, fds["kid"])
	if err := os.Remove(filepath.Join(dir, "watched")); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := ckptfsErr(t, "restore", filepath.Join(m.mnt, id))
	if err == nil {
		unix.Kill(pid, unix.SIGKILL)
		waitGone(t, pid)
		t.Fatalf("restore succeeded without the watched file:\n%s", out)
	}
	if want := filepath.Join(dir, "watched"); !strings.Contains(errOut, want) || !strings.Contains(errOut, "inotify") {
		t.Errorf("restore error does not name the inotify watch on %s:\n%s", want, errOut)
	}
	t.Logf("restore said: %s", strings.TrimSpace(errOut))
	if _, err := os.Stat("/proc/" + itoa(pid)); err == nil {
		t.Errorf("pid %d exists after a failed restore", pid)
	}

	// In a copy of the checkpoint the watch is pointed at another file:
	// the restore watches that one, with the recorded wd.
	cp := filepath.Join(t.TempDir(), "copy")
	if b, err := exec.Command("cp", "-a", filepath.Join(m.mnt, id), cp).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v %s", err, b)
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, task := range []int{pid, fds["kid"]} {
		info := filepath.Join(cp, "tasks", itoa(task), "fdinfo", itoa(fds["inotify"]))
		b, err := os.ReadFile(info)
		if err != nil {
			t.Fatal(err)
		}
		edited := strings.Replace(string(b), "path="+strconv.Quote(filepath.Join(dir, "watched"))+"\n", "path="+strconv.Quote(other)+"\n", 1)
		if edited == string(b) {
			t.Fatalf("no watch on %s in %s:\n%s", filepath.Join(dir, "watched"), info, b)
		}
		if err := os.WriteFile(info, []byte(edited), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	if out, errOut, err := ckptfsErr(t, "restore", cp); err != nil {
		t.Fatalf("restore of the edited copy: %v\n%s%s", err, out, errOut)
	}
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		waitGone(t, pid)
	})
	var st unix.Stat_t
	if err := unix.Stat(other, &st); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile("/proc/" + itoa(pid) + "/fdinfo/" + itoa(fds["inotify"]))
	if want := fmt.Sprintf("inotify wd:3 ino:%x ", st.Ino); !strings.Contains(string(b), want) {
		t.Fatalf("restored inotify fdinfo lacks %q:\n%s", want, b)
	}
}

// TestFDKindsRefuseProcWatch: an inotify watch on a procfs file cannot be
// resolved to a path (procfs opens no file handles); the dump refuses it,
// naming pid, fd and kind, and the program runs on.
func TestFDKindsRefuseProcWatch(t *testing.T) {
	p, fds := startFDKinds(t, t.TempDir(), "proc")
	store := filepath.Join(t.TempDir(), "store")
	_, stderr, err := ckptfsErr(t, "dump", "-s", store, itoa(p.Pid))
	if err == nil {
		t.Fatal("dump of an inotify watch on /proc/uptime succeeded")
	}
	want := "process " + itoa(p.Pid) + " fd " + itoa(fds["inotify"]) + " is an inotify watch without a path (wd=4 "
	if !strings.Contains(stderr, want) || !strings.Contains(stderr, "/proc") {
		t.Fatalf("dump error %q does not say %q ... /proc", stderr, want)
	}
	t.Logf("dump said: %s", strings.TrimSpace(stderr))
	p.checkUnharmed(t, store)
}
