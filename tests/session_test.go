package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sessionStat holds the session fields of /proc/<pid>/stat.
type sessionStat struct {
	PGID, SID int
	TTYNr     uint64
	TPGID     int
}

func readSessionStat(t *testing.T, pid int) sessionStat {
	t.Helper()
	st, err := stat(pid)
	if err != nil {
		t.Fatalf("stat of %d: %v", pid, err)
	}
	return sessionStat{PGID: st.PGID, SID: st.SID, TTYNr: st.TTYNr, TPGID: st.TPGID}
}

// TestRestoreProcessGroups restores a tree whose root leads its own session
// (no terminal): a child in the root's group, a child leading a group with
// a grandchild in it, a child that joined that group, and a child leading
// a session of its own with a grandchild. Every task's pgid and sid must be
// the dump's.
func TestRestoreProcessGroups(t *testing.T) {
	bin := buildProg(t, "session")
	out := filepath.Join(t.TempDir(), "groups.out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(bin, "groups")
	cmd.Stdout, cmd.Stderr = f, f // stdin: /dev/null
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &program{Name: "session-groups", Cmd: cmd, Out: out, Pid: cmd.Process.Pid}
	t.Cleanup(p.kill)
	p.waitTicks(t, 14) // all seven print
	pids := treePids(p.Pid)
	if len(pids) != 7 {
		t.Fatalf("tree %v, want 7 tasks", pids)
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	before := map[int]sessionStat{}
	groups, sessions := map[int]bool{}, map[int]bool{}
	for _, pid := range pids {
		st := readSessionStat(t, pid)
		before[pid] = st
		groups[st.PGID], sessions[st.SID] = true, true
	}
	if len(groups) != 3 || len(sessions) != 2 || before[p.Pid].SID != p.Pid {
		t.Fatalf("dumped tree has groups %v and sessions %v, want 3 and 2: %v", groups, sessions, before)
	}

	killRestoreFromMount(t, p.Pid)
	for _, pid := range pids {
		got := readSessionStat(t, pid)
		if got.PGID != before[pid].PGID || got.SID != before[pid].SID {
			t.Errorf("task %d: restored pgid %d sid %d, dumped pgid %d sid %d", pid, got.PGID, got.SID, before[pid].PGID, before[pid].SID)
		}
	}
	t.Logf("pgid/sid per task: %v", before)
	p.waitTicks(t, 14)
	p.checkHealthy(t)
}

// pty is the master side of a pseudo-terminal whose output is collected.
type pty struct {
	master *os.File
	slave  string // /dev/pts/N
	rdev   uint64 // the slave's device number (stat tty_nr)
	mu     sync.Mutex
	buf    bytes.Buffer
}

// openPty opens a new pty (a master on /dev/ptmx, unlocked) and returns it
// with its slave opened without becoming anybody's controlling terminal.
func openPty(t *testing.T) (*pty, *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("TIOCGPTN: %v", err)
	}
	p := &pty{master: m, slave: fmt.Sprintf("/dev/pts/%d", n)}
	s, err := os.OpenFile(p.slave, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(s.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	p.rdev = st.Rdev
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := m.Read(b)
			p.mu.Lock()
			p.buf.Write(b[:n])
			p.mu.Unlock()
			if err != nil {
				return // EIO once no slave is open, or closed
			}
		}
	}()
	return p, s
}

func (p *pty) text() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.ReplaceAll(p.buf.String(), "\r", "")
}

// waitFor waits until the terminal showed a line matching re.
func (p *pty) waitFor(t *testing.T, re string) {
	t.Helper()
	rx := regexp.MustCompile("(?m)" + re)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if rx.MatchString(p.text()) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never showed %q; it showed:\n%s", p.slave, re, p.text())
}

// rolePid finds the pid of the task that prints "<role> <pid> tick".
func (p *pty) rolePid(t *testing.T, role string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + role + ` (\d+) tick`).FindStringSubmatch(p.text())
	if m == nil {
		t.Fatalf("no %s tick on %s:\n%s", role, p.slave, p.text())
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// TestRestoreShellJob dumps a session leader that runs on pty A (its
// controlling terminal, fds 0-2) with a child in its group and a child
// leading a background group, and restores it:
//   - without --shell-job: refused, naming the pid, fd and terminal, with
//     nothing left behind;
//   - with --shell-job from a shell that leads the session of pty B: the
//     tasks join that session with B as controlling terminal, their output
//     goes on on B, the root's group is B's foreground group and reads and
//     echoes a line typed on B, its line counter going on from the dump.
func TestRestoreShellJob(t *testing.T) {
	bin := buildProg(t, "session")
	a, slaveA := openPty(t)
	cmd := exec.Command(bin, "tty")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slaveA, slaveA, slaveA
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slaveA.Close()
	root := cmd.Process.Pid
	prog := &program{Name: "session-tty", Cmd: cmd, Pid: root}
	t.Cleanup(prog.kill)
	a.waitFor(t, fmt.Sprintf(`^session %d tick 3 ok`, root))
	a.waitFor(t, `^bg \d+ tick 3 ok`)
	a.waitFor(t, `^same \d+ tick 3 ok`)
	if _, err := a.master.WriteString("before\n"); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, `^echo 1 before ok`)
	same, bg := a.rolePid(t, "same"), a.rolePid(t, "bg")
	pids := treePids(root)
	if fmt.Sprint(pids) != fmt.Sprint([]int{root, same, bg}) {
		t.Fatalf("tree %v, want [%d %d %d]", pids, root, same, bg)
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	for pid, want := range map[int]sessionStat{
		root: {PGID: root, SID: root, TTYNr: a.rdev, TPGID: root},
		same: {PGID: root, SID: root, TTYNr: a.rdev, TPGID: root},
		bg:   {PGID: bg, SID: root, TTYNr: a.rdev, TPGID: root},
	} {
		if got := readSessionStat(t, pid); got != want {
			t.Fatalf("before dump: task %d has %+v, want %+v", pid, got, want)
		}
	}

	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	id := lastLine(ckptfs(t, "dump", "-s", m.store, "--kill", itoa(root)))
	for _, pid := range pids {
		waitGone(t, pid)
	}
	dir := filepath.Join(m.mnt, id)
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })

	// Without --shell-job: refused before anything is created.
	_, errOut, err := ckptfsErr(t, "restore", dir)
	want := fmt.Sprintf("task %d: fd 0 is the terminal %s", root, a.slave)
	if err == nil || !strings.Contains(errOut, want) || !strings.Contains(errOut, "--shell-job") {
		t.Fatalf("restore without --shell-job: err %v, stderr %q; want it refused with %q and --shell-job", err, errOut, want)
	}
	t.Logf("refused: %s", strings.TrimSpace(errOut))
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Fatalf("pid %d exists after a refused restore", pid)
		}
	}

	// With --shell-job, from a shell leading the session of pty B.
	b, slaveB := openPty(t)
	out := filepath.Join(t.TempDir(), "restore.out")
	script := fmt.Sprintf("%s restore --shell-job %s >%s 2>&1; echo rc=$? >>%s; exec sleep 600",
		filepath.Join(built(t), "ckptfs"), dir, out, out)
	sh := exec.Command("sh", "-c", script)
	sh.Stdin, sh.Stdout, sh.Stderr = slaveB, slaveB, slaveB
	sh.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	slaveB.Close()
	t.Cleanup(func() { sh.Process.Kill(); sh.Wait() })
	t.Cleanup(func() {
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		for _, pid := range pids {
			waitGone(t, pid)
		}
	})
	var res []byte
	for deadline := time.Now().Add(60 * time.Second); ; {
		res, _ = os.ReadFile(out)
		if bytes.Contains(res, []byte("rc=")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restore --shell-job did not finish; output:\n%s", res)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !bytes.Contains(res, []byte("rc=0")) || !strings.Contains(string(res), itoa(root)+"\n") {
		t.Fatalf("restore --shell-job failed:\n%s", res)
	}
	b.waitFor(t, fmt.Sprintf(`^session %d tick \d+ ok`, root))
	b.waitFor(t, fmt.Sprintf(`^same %d tick \d+ ok`, same))
	b.waitFor(t, fmt.Sprintf(`^bg %d tick \d+ ok`, bg))
	if _, err := b.master.WriteString("after\n"); err != nil {
		t.Fatal(err)
	}
	b.waitFor(t, `^echo 2 after ok`)
	for pid, want := range map[int]sessionStat{
		root:           {PGID: root, SID: sh.Process.Pid, TTYNr: b.rdev, TPGID: root},
		same:           {PGID: root, SID: sh.Process.Pid, TTYNr: b.rdev, TPGID: root},
		bg:             {PGID: bg, SID: sh.Process.Pid, TTYNr: b.rdev, TPGID: root},
		sh.Process.Pid: {PGID: sh.Process.Pid, SID: sh.Process.Pid, TTYNr: b.rdev, TPGID: root},
	} {
		if got := readSessionStat(t, pid); got != want {
			t.Errorf("after restore: task %d has %+v, want %+v", pid, got, want)
		}
	}
	// The ticks went on from where they were (counters kept).
	if regexp.MustCompile(fmt.Sprintf(`(?m)^session %d tick 1 ok`, root)).MatchString(b.text()) {
		t.Errorf("restored root started counting anew:\n%s", b.text())
	}
}
