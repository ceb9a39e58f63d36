package tests

import (
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

// tickRe finds the counter's lines in a tmux pane.
var tickRe = regexp.MustCompile(`tick (\d+)`)

// tickLineRe finds the counter's whole lines in a typescript.
var tickLineRe = regexp.MustCompile(`tick (\d+)\r?\n`)

// TestTmuxServer dumps (--kill) a tmux server with two windows, one whose
// pane runs a counter and one with an interactive sh, and restores it: the
// pty pairs come back at their indexes, `tmux capture-pane` on the
// restored server's socket shows the counter going on from where it was,
// and `tmux send-keys` reaches the sh, whose answer shows in its pane. The
// shells have their pty as controlling terminal again, in their own
// session, with their group in the foreground. Run as root, and as nobody
// (server, shells and the slaves' owner all nobody's).
func TestTmuxServer(t *testing.T) {
	needRoot(t)
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("no tmux (apt-get install tmux; .ci/run installs it)")
	}
	built(t)
	t.Run("root", func(t *testing.T) { testTmux(t, tmux, false) })
	t.Run("nobody", func(t *testing.T) { testTmux(t, tmux, true) })
}

func testTmux(t *testing.T, tmux string, nobody bool) {
	dir := t.TempDir()
	if nobody {
		dir = sharedTempDir(t, "ckptfs-tmux-")
		if err := os.Chown(dir, nobodyUID, nobodyGID); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "tmux.sock")
	run := func(args ...string) (string, error) {
		cmd := exec.Command(tmux, append([]string{"-S", sock, "-f", "/dev/null"}, args...)...)
		// SHELL: tmux runs commands with it, and without it nobody's
		// login shell (nologin) would end every pane at once.
		cmd.Env = append(os.Environ(), "TERM=xterm", "TMUX=", "HOME="+dir, "SHELL=/bin/sh")
		if nobody {
			asNobody(cmd)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	counter := "sh -c 'i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done'"
	if out, err := run("new-session", "-d", "-x", "100", "-y", "30", "-s", "ck", counter); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	out, err := run("display", "-p", "#{pid}")
	server, _ := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || server <= 0 {
		t.Fatalf("tmux server pid: %q %v", out, err)
	}
	t.Cleanup(func() {
		run("kill-server")
		waitGone(t, server)
	})
	if out, err := run("new-window", "-t", "ck", "sh"); err != nil {
		t.Fatalf("tmux new-window: %v\n%s", err, out)
	}
	last := func() int {
		out, _ := run("capture-pane", "-p", "-t", "ck:0")
		m := tickRe.FindAllStringSubmatch(out, -1)
		if len(m) == 0 {
			return 0
		}
		n, _ := strconv.Atoi(m[len(m)-1][1])
		return n
	}
	waitTick := func(above int) int {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if n := last(); n > above {
				return n
			}
			time.Sleep(50 * time.Millisecond)
		}
		out, _ := run("capture-pane", "-p", "-t", "ck:0")
		t.Fatalf("the counter did not pass %d:\n%s", above, out)
		return 0
	}
	waitTick(5)
	// The sh runs a foreground job: its group, not the sh's, is the
	// pty's foreground group.
	if out, err := run("send-keys", "-t", "ck:1", "sleep 1000", "Enter"); err != nil {
		t.Fatalf("send-keys: %v\n%s", err, out)
	}
	sleeper := 0
	for deadline := time.Now().Add(30 * time.Second); sleeper == 0; time.Sleep(20 * time.Millisecond) {
		for _, pid := range treePids(server) {
			if b, _ := os.ReadFile("/proc/" + itoa(pid) + "/cmdline"); string(b) == "sleep\x001000\x00" {
				sleeper = pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the sh in window 1 did not start sleep 1000")
		}
	}
	if st, err := stat(sleeper); err != nil || st.TPGID != sleeper {
		t.Fatalf("sleep 1000 (%d) is not the foreground job: %+v %v", sleeper, st, err)
	}
	panes, err := run("list-panes", "-a", "-F", "#{pane_pid} #{pane_tty}")
	if err != nil {
		t.Fatalf("list-panes: %v\n%s", err, panes)
	}

	ckpt, _ := dumpKill(t, server)
	objs, _ := filepath.Glob(filepath.Join(ckpt, "objects", "pty-*"))
	if len(objs) != 2 {
		t.Fatalf("checkpoint has pty objects %v, want 2", objs)
	}
	if out, err := run("capture-pane", "-p", "-t", "ck:0"); err == nil {
		t.Fatalf("the tmux server still answers after dump --kill:\n%s", out)
	}
	if got := lastLine(ckptfs(t, "restore", ckpt)); got != itoa(server) {
		t.Fatalf("restore printed %q, want %d", got, server)
	}
	if st, _ := os.ReadFile("/proc/" + itoa(server) + "/status"); nobody && !strings.Contains(string(st), "\nUid:\t65534\t65534\t65534\t65534\n") {
		t.Errorf("restored tmux server is not nobody's:\n%s", st)
	}
	// Each pane's shell: its pty is its controlling terminal, it leads
	// its session and its group is the foreground one.
	for _, l := range strings.Split(strings.TrimSpace(panes), "\n") {
		f := strings.Fields(l)
		pid, _ := strconv.Atoi(f[0])
		n, _ := strconv.Atoi(strings.TrimPrefix(f[1], "/dev/pts/"))
		st, err := stat(pid)
		if err != nil {
			t.Fatalf("pane shell %d: %v", pid, err)
		}
		fg := st.PGID
		if st.TPGID == sleeper {
			fg = sleeper // window 1's sh: its job is in the foreground
		}
		if want := uint64(unix.Mkdev(136+uint32(n)/256, uint32(n)%256)); st.TTYNr != want || st.SID != pid || st.TPGID != fg {
			t.Errorf("pane shell %d on %s: tty_nr %d (want %d), session %d, foreground group %d (its group %d)",
				pid, f[1], st.TTYNr, want, st.SID, st.TPGID, st.PGID)
		}
		var pst unix.Stat_t
		if err := unix.Stat(f[1], &pst); err != nil {
			t.Errorf("pane %s: %v", f[1], err)
		} else if nobody && pst.Uid != nobodyUID {
			t.Errorf("pane %s is uid %d's, want nobody's", f[1], pst.Uid)
		}
	}
	// The counter goes on from where it was.
	before := last()
	if before < 5 {
		t.Fatalf("restored pane shows tick %d, want the ticks from before the dump", before)
	}
	waitTick(before + 3)
	// ^C reaches the foreground job (SIGINT to the pty's foreground
	// group), then keys reach the interactive sh, its answer shows in its
	// pane.
	if st, err := stat(sleeper); err != nil || st.TPGID != sleeper {
		t.Fatalf("restored sleep 1000 (%d) is not the foreground job: %+v %v", sleeper, st, err)
	}
	if out, err := run("send-keys", "-t", "ck:1", "C-c"); err != nil {
		t.Fatalf("send-keys C-c: %v\n%s", err, out)
	}
	waitGone(t, sleeper)
	if out, err := run("send-keys", "-t", "ck:1", "echo answer-$((6*7))", "Enter"); err != nil {
		t.Fatalf("send-keys: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, _ := run("capture-pane", "-p", "-t", "ck:1")
		if strings.Contains(out, "answer-42") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sh in window 1 did not answer:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPtyState dumps a program holding three pty pairs (tests/progs/
// ptystate.c: one raw with its master in packet mode and bytes queued both
// ways, one locked, one canonical with output queued) while it runs: the
// dump leaves every queue as it was (the program's own check passes), a
// restore (--pidns) while the original holds the indexes is refused
// naming the pty,
// and once the original is gone the restored program finds every pair at
// its index with its termios, window size, packet mode, lock and queued
// bytes, and a line typed on the canonical one reaches its slave.
func TestPtyState(t *testing.T) {
	needRoot(t)
	p := startAppending(t, "ptystate", []string{buildProg(t, "ptystate")})
	ready := strings.Fields(p.waitLine(t, "ready "))
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	ckpt := dumpLive(t, m, p.Pid)
	info := func(idx string) string {
		b, err := os.ReadFile(filepath.Join(ckpt, "objects", "pty-"+idx, "info"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for idx, want := range map[string][]string{
		ready[1]: {"to-slave: 10\n", "to-master: 13\n", "packet: 1\n", "rows: 33\n", "cols: 111\n", "locked: 0\n"},
		ready[2]: {"locked: 1\n", "to-slave: 0\n", "to-master: 0\n"},
		ready[3]: {"to-master: 5\n", "to-slave: 0\n"},
	} {
		if in := info(idx); !containsAll(in, want) {
			t.Errorf("pty-%s info lacks %q:\n%s", idx, want, in)
		}
	}
	checks := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); ; {
			b, _ := os.ReadFile(p.Out)
			if strings.Contains(string(b), "check FAIL") {
				t.Fatalf("the program's check failed:\n%s", b)
			}
			if strings.Count(string(b), "check ok\n") >= want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %d checks in 20s:\n%s", want, b)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	unix.Kill(p.Pid, unix.SIGUSR1)
	checks(1) // the dump changed nothing the original sees

	// --pidns: the pids are free there, the ptys are not.
	_, errOut, err := ckptfsErr(t, "restore", "--pidns", ckpt)
	if want := "pty /dev/pts/" + ready[1] + " is in use"; err == nil || !strings.Contains(errOut, want) {
		t.Fatalf("restore while the original holds its ptys: %v\n%s\nwant %q", err, errOut, want)
	}
	pid := p.Pid
	p.kill()
	waitGone(t, pid)
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	if got := lastLine(ckptfs(t, "restore", ckpt)); got != itoa(pid) {
		t.Fatalf("restore printed %q, want %d", got, pid)
	}
	defer killRestored(t, pid)
	unix.Kill(pid, unix.SIGUSR1)
	checks(2)
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestScreenSession dumps (--kill) a screen session (screen -D -m) with a
// counter in window 0 and an sh in window 1 and restores it: screen -ls
// lists it, hardcopy shows the counter going on from where it was, and
// keys stuffed into window 1 reach the sh.
func TestScreenSession(t *testing.T) {
	needRoot(t)
	screen, err := exec.LookPath("screen")
	if err != nil {
		t.Skip("no screen (apt-get install screen; .ci/run installs it)")
	}
	built(t)
	dir := t.TempDir()
	sdir := filepath.Join(dir, "screens")
	if err := os.Mkdir(sdir, 0o700); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "SCREENDIR="+sdir, "TERM=xterm", "STY=", "SHELL=/bin/sh")
	run := func(args ...string) (string, error) {
		cmd := exec.Command(screen, append([]string{"-S", "ck"}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	cmd := exec.Command(screen, "-D", "-m", "-S", "ck", "sh", "-c", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done")
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	server := cmd.Process.Pid
	p := &program{Name: "screen", Cmd: cmd, Pid: server}
	t.Cleanup(func() {
		run("-X", "quit")
		p.kill()
		waitGone(t, server)
	})
	hardcopy := func(window string) string {
		f := filepath.Join(dir, "hc"+window)
		if _, err := run("-p", window, "-X", "hardcopy", f); err != nil {
			return ""
		}
		b, _ := os.ReadFile(f)
		return string(b)
	}
	last := func() int {
		m := tickRe.FindAllStringSubmatch(hardcopy("0"), -1)
		if len(m) == 0 {
			return 0
		}
		n, _ := strconv.Atoi(m[len(m)-1][1])
		return n
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: window 0:\n%s\nwindow 1:\n%s", what, hardcopy("0"), hardcopy("1"))
			}
		}
	}
	waitFor("the counter does not tick", func() bool { return last() > 5 })
	if out, err := run("-X", "screen", "sh"); err != nil {
		t.Fatalf("screen -X screen sh: %v\n%s", err, out)
	}
	waitFor("no window 1", func() bool { out, _ := run("-p", "1", "-Q", "number"); return strings.Contains(out, "1") })

	ckpt, _ := dumpKill(t, server)
	if got := lastLine(ckptfs(t, "restore", ckpt)); got != itoa(server) {
		t.Fatalf("restore printed %q, want %d", got, server)
	}
	if out, err := run("-ls"); !strings.Contains(out, itoa(server)+".ck") || strings.Contains(out, "Dead") {
		t.Fatalf("screen -ls after restore: %v\n%s", err, out)
	}
	// hardcopy is written by the server after the client returns.
	before := 0
	waitFor("restored window 0 shows no ticks from before the dump", func() bool { before = last(); return before > 5 })
	waitFor("the counter does not go on", func() bool { return last() > before+3 })
	if out, err := run("-p", "1", "-X", "stuff", "echo answer-$((6*7))\n"); err != nil {
		t.Fatalf("stuff: %v\n%s", err, out)
	}
	waitFor("the sh in window 1 does not answer", func() bool { return strings.Contains(hardcopy("1"), "answer-42") })
}

// TestScriptSession dumps (--kill) script(1) recording a counter on the pty
// it made and restores it: the typescript goes on with the next ticks, in
// order, none lost or repeated.
func TestScriptSession(t *testing.T) {
	needRoot(t)
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("no script(1) (util-linux)")
	}
	built(t)
	dir := t.TempDir()
	ts := filepath.Join(dir, "typescript")
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	cmd := exec.Command(script, "-q", "-f", "-c", "sh -c 'i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.1; done'", ts)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &program{Name: "script", Cmd: cmd, Pid: cmd.Process.Pid}
	t.Cleanup(p.kill)
	ticks := func() []int {
		b, _ := os.ReadFile(ts)
		var out []int
		for _, m := range tickLineRe.FindAllStringSubmatch(string(b), -1) { // whole lines only
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
		return out
	}
	waitTicks := func(n int) []int {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if got := ticks(); len(got) >= n {
				return got
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(ts)
				t.Fatalf("fewer than %d ticks in the typescript:\n%s", n, b)
			}
		}
	}
	waitTicks(5)
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	ckpt, pids := dumpKill(t, p.Pid)
	dumped := len(ticks())
	if got := lastLine(ckptfs(t, "restore", ckpt)); got != itoa(p.Pid) {
		t.Fatalf("restore printed %q, want %d", got, p.Pid)
	}
	defer func() {
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		for _, pid := range pids {
			waitGone(t, pid)
		}
	}()
	got := waitTicks(dumped + 5)
	for i, n := range got {
		if n != i+1 {
			t.Fatalf("typescript ticks %v: tick %d at line %d (dumped after %d)", got, n, i+1, dumped)
		}
	}
}
