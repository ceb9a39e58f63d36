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

// TestTmuxServer dumps (--kill) a tmux server with two windows, one whose
// pane runs a counter and one with an interactive sh, and restores it: the
// pty pairs come back at their indexes, `tmux capture-pane` on the
// restored server's socket shows the counter going on from where it was,
// and `tmux send-keys` reaches the sh, whose answer shows in its pane. The
// shells have their pty as controlling terminal again, in their own
// session, with their group in the foreground.
func TestTmuxServer(t *testing.T) {
	needRoot(t)
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("no tmux (apt-get install tmux; .ci/run installs it)")
	}
	built(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "tmux.sock")
	run := func(args ...string) (string, error) {
		cmd := exec.Command(tmux, append([]string{"-S", sock, "-f", "/dev/null"}, args...)...)
		cmd.Env = append(os.Environ(), "TERM=xterm", "TMUX=")
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
		if want := uint64(unix.Mkdev(136+uint32(n)/256, uint32(n)%256)); st.TTYNr != want || st.SID != pid || st.TPGID != st.PGID {
			t.Errorf("pane shell %d on %s: tty_nr %d (want %d), session %d, foreground group %d (its group %d)",
				pid, f[1], st.TTYNr, want, st.SID, st.TPGID, st.PGID)
		}
		if _, err := os.Stat(f[1]); err != nil {
			t.Errorf("pane %s: %v", f[1], err)
		}
	}
	// The counter goes on from where it was.
	before := last()
	if before < 5 {
		t.Fatalf("restored pane shows tick %d, want the ticks from before the dump", before)
	}
	waitTick(before + 3)
	// Keys reach the interactive sh, its answer shows in its pane.
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
