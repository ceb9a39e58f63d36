package tests

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The sizes acceptq.py sends: N bytes queued at the dump and again after,
// M bytes of reply.
const acceptqN, acceptqM = "60000", "300000"

func acceptqProg() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "progs", "acceptq.py")
}

// queuedInfos returns the infos of the checkpoint's connections that were
// in a listener's accept queue.
func queuedInfos(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, info := range tcpInfos(t, dir) {
		if strings.Contains(info, "queued-in: tcp-") {
			out = append(out, info)
		}
	}
	return out
}

// startAcceptq starts, in a network namespace of its own, an acceptq.py
// server on port that does not accept yet and a client that connected to
// it and sent its bytes; the server accepts once trigger exists.
func startAcceptq(t *testing.T, port string) (n *netns, srv, cl *program, trigger string) {
	t.Helper()
	n = newNetns(t)
	trigger = filepath.Join(t.TempDir(), "accept-now")
	srv = startInNetns(t, n, "acceptq server", "python3", acceptqProg(), "server", port, trigger, acceptqN, acceptqM)
	waitLine(t, srv, "server listening ok")
	cl = startInNetns(t, n, "acceptq client", "python3", acceptqProg(), "client", port, acceptqN, acceptqM)
	waitLine(t, cl, "client sent ok")
	return n, srv, cl, trigger
}

// acceptNow lets the server accept (trigger) and waits until server and
// client say their data arrived whole, then checks both are healthy.
func acceptNow(t *testing.T, trigger string, srv, cl *program) {
	t.Helper()
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitLine(t, srv, "server done ok")
	waitLine(t, cl, "client done ok")
	srv.checkHealthy(t)
	cl.checkHealthy(t)
}

// TestTCPQueuedOutsideClient: a client outside the tree connects and
// sends 60000 bytes to a server that has not accept()ed it yet; the server
// is dumped with --kill --tcp-established (the connection taken from the
// queue at the point of no return), restored, and only then accept()s: it
// reads the bytes sent before the dump, its reply and a second request go
// through the same connection, byte-exact; the lock is gone.
func TestTCPQueuedOutsideClient(t *testing.T) {
	n, srv, cl, trigger := startAcceptq(t, "7001")
	pids := treePids(srv.Pid)
	dir := dumpKillFlags(t, srv.Pid, "--tcp-established")
	srv.kill()
	if q := queuedInfos(t, dir); len(q) != 1 || !strings.Contains(q[0], "recv-queue: "+acceptqN+"\n") {
		t.Fatalf("queued connections in the checkpoint: %q, want one with %s bytes", q, acceptqN)
	}
	if ts := lockTables(t, n); len(ts) != 1 {
		t.Fatalf("lock tables while the server is down: %v, want one", ts)
	}
	restoreInNetns(t, n, dir, pids)
	srv.Pid = pids[0]
	if ts := lockTables(t, n); len(ts) != 0 {
		t.Fatalf("lock tables after the restore: %v", ts)
	}
	acceptNow(t, trigger, srv, cl)
}

// TestTCPQueuedInTree: the same with the client a child of the server,
// in the tree: its connection is restored in repair mode, the server's
// end put back into the listener's queue.
func TestTCPQueuedInTree(t *testing.T) {
	n := newNetns(t)
	trigger := filepath.Join(t.TempDir(), "accept-now")
	p := startInNetns(t, n, "acceptq pair", "python3", acceptqProg(), "pair", "7002", trigger, acceptqN, acceptqM)
	waitLine(t, p, "client sent ok")
	pids := treePids(p.Pid)
	if len(pids) != 2 {
		t.Fatalf("tree %v, want server and client", pids)
	}
	dir := dumpKillFlags(t, p.Pid, "--tcp-established")
	p.kill()
	if q := queuedInfos(t, dir); len(q) != 1 {
		t.Fatalf("queued connections in the checkpoint: %q, want one", q)
	}
	restoreInNetns(t, n, dir, pids)
	p.Pid = pids[0]
	if err := os.WriteFile(trigger, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitLine(t, p, "server done ok")
	waitLine(t, p, "client done ok")
	p.checkHealthy(t)
}

// TestTCPQueuedRefusedWithoutKill: a dump without --kill refuses a
// listener with a connection in its queue, naming the listener, the
// number and the flags; the connection is still queued: the server then
// accepts it and gets its bytes.
func TestTCPQueuedRefusedWithoutKill(t *testing.T) {
	_, srv, cl, trigger := startAcceptq(t, "7003")
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	_, errOut, err := ckptfsErr(t, "dump", "-s", m.store, "--tcp-established", itoa(srv.Pid))
	if err == nil {
		t.Fatal("dump without --kill of a listener with a queued connection succeeded")
	}
	for _, want := range []string{"127.0.0.1:7003", "1 connections not yet accepted", "--kill --tcp-established"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("refusal %q does not say %q", errOut, want)
		}
	}
	acceptNow(t, trigger, srv, cl)
}

// TestTCPQueuedPutBackOnFailedDump: a dump --kill aborted after it took
// the queued connection (at the hold point "queued", just before the
// commit) puts it back into the live listener's queue: the server, still
// running, accepts it and gets its bytes; no lock is left and nothing is
// committed.
func TestTCPQueuedPutBackOnFailedDump(t *testing.T) {
	n, srv, cl, trigger := startAcceptq(t, "7004")
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	cmd := exec.Command(filepath.Join(built(t), "ckptfs"), "dump", "-s", m.store, "--kill", "--tcp-established", itoa(srv.Pid))
	cmd.Env = append(os.Environ(), "CKPTFS_TEST_HOLD=queued")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var errText strings.Builder
	sc := bufio.NewScanner(stderr)
	held := false
	for sc.Scan() {
		errText.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "CKPTFS_HOLD queued") {
			held = true
			unix.Kill(cmd.Process.Pid, unix.SIGINT)
		}
	}
	err = cmd.Wait()
	if !held {
		t.Fatalf("the dump never reached the hold point: %v\n%s", err, errText.String())
	}
	if err == nil {
		t.Fatalf("the aborted dump succeeded:\n%s", errText.String())
	}
	srv.checkUnharmed(t, m.store)
	if ts := lockTables(t, n); len(ts) != 0 {
		t.Fatalf("lock tables after the failed dump: %v", ts)
	}
	acceptNow(t, trigger, srv, cl)
}
