package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// startPeerless starts progs/peerless.c with fd 9 the read end of a pipe
// whose write end the test holds (with queued written into it) and fd 10
// the write end of a pipe whose read end the test holds, fd 11 a unix
// stream socket connected to one the test holds (queued sent on it too),
// fd 12 the read end of a named FIFO the test writes queued into: every
// peer is outside the dumped tree. The test's ends are closed once the
// program is dumped (dumpPeerless). It returns the program and fd 9's pipe
// inode.
func startPeerless(t *testing.T, queued string) (*program, uint64, []*os.File) {
	t.Helper()
	bin := buildProg(t, "peerless")
	dir := t.TempDir()
	in, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, out, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); inW.Close(); outR.Close(); out.Close() })
	if _, err := inW.WriteString(queued); err != nil {
		t.Fatal(err)
	}
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	sock, peer := os.NewFile(uintptr(sp[0]), "sock"), os.NewFile(uintptr(sp[1]), "peer")
	t.Cleanup(func() { sock.Close(); peer.Close() })
	if _, err := peer.WriteString(queued); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(in.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	outFile := filepath.Join(dir, "peerless.out")
	f, err := os.Create(outFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, filepath.Join(dir, "go"), fifo)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.ExtraFiles = make([]*os.File, 9) // fds 3-11, nil: closed
	cmd.ExtraFiles[6], cmd.ExtraFiles[7], cmd.ExtraFiles[8] = in, out, sock
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &program{Name: "peerless", Cmd: cmd, Out: outFile, Pid: cmd.Process.Pid}
	t.Cleanup(p.kill)
	p.waitTicks(t, 1)
	fw, err := os.OpenFile(fifo, os.O_WRONLY, 0) // the program holds the read end
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.WriteString(queued); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	return p, st.Ino, []*os.File{fw, inW, outR, peer}
}

// dumpPeerless dumps the program with --kill, closes the test's ends
// (peers) and returns the checkpoint directory under a mount.
func dumpPeerless(t *testing.T, p *program, peers []*os.File) string {
	t.Helper()
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	id := lastLine(ckptfs(t, "dump", "-s", m.store, "--kill", itoa(p.Pid)))
	p.kill()
	waitGone(t, p.Pid)
	for _, f := range peers {
		f.Close() // the peers exit too: a FIFO's buffer goes with its last user
	}
	return filepath.Join(m.mnt, id)
}

// restorePeerless restores dir (restore's extra fds from 3 on: extra),
// lets the program go on and returns its output after it is done.
func restorePeerless(t *testing.T, dir string, p *program, extra []*os.File, args ...string) string {
	t.Helper()
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	cmd := exec.Command(filepath.Join(built(t), "ckptfs"), append(append([]string{"restore"}, args...), dir)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.ExtraFiles = extra
	if err := cmd.Run(); err != nil {
		t.Fatalf("restore: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	t.Cleanup(func() {
		unix.Kill(p.Pid, unix.SIGKILL)
		waitGone(t, p.Pid)
	})
	if err := os.WriteFile(filepath.Join(filepath.Dir(p.Out), "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p.waitLine(t, "peerless done")
	b, _ := os.ReadFile(p.Out)
	return string(b)
}

// TestRestorePeerlessPipe: a program holding pipes whose other ends are
// outside its tree (the test's) is dumped with --kill and restored; the
// pipes, the socket and the FIFO come back with no peer: fds 9, 11 and 12
// give the bytes queued at dump time, then EOF; fds 10 and 11 give EPIPE,
// as if the peers had exited.
func TestRestorePeerlessPipe(t *testing.T) {
	p, _, peers := startPeerless(t, "queued at dump")
	dir := dumpPeerless(t, p, peers)
	out := restorePeerless(t, dir, p, nil)
	for _, want := range []string{"fd9 read \"queued at dump\" then eof\n", "fd11 read \"queued at dump\" then eof\n", "fd12 read \"queued at dump\" then eof\n", "fd10 write EPIPE\n", "fd11 write EPIPE\n"} {
		if !strings.Contains(out, want) {
			t.Fatalf("after restore, no %q:\n%s", want, out)
		}
	}
}

// TestRestoreInheritFD: restore --inherit-fd fd[3]:pipe:[INO] hands the
// program a pipe of the test's at fd 9 in place of the one it had: it
// reads what the test writes there, then EOF when the test closes it.
func TestRestoreInheritFD(t *testing.T) {
	p, ino, peers := startPeerless(t, "queued at dump")
	dir := dumpPeerless(t, p, peers)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := w.WriteString("handed in"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	key := fmt.Sprintf("pipe:[%d]", ino)
	// A key the tree does not have is an error naming it.
	_, errOut, err := ckptfsErr(t, "restore", "--inherit-fd", "fd[1]:pipe:[1]", dir)
	if err == nil || !strings.Contains(errOut, "no pipe, socket or regular file fd of the tree is pipe:[1]") {
		t.Fatalf("restore with a wrong key: %v\n%s", err, errOut)
	}
	out := restorePeerless(t, dir, p, []*os.File{r}, "--inherit-fd", "fd[3]:"+key)
	if !strings.Contains(out, "fd9 read \"handed in\" then eof\n") || !strings.Contains(out, "fd10 write EPIPE\n") {
		t.Fatalf("after restore with --inherit-fd fd[3]:%s:\n%s", key, out)
	}
}
