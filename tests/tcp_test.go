package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startInNetns starts argv in network namespace n like startArgv does.
func startInNetns(t *testing.T, n *netns, name string, argv ...string) *program {
	t.Helper()
	return startArgv(t, name, n.argv(argv...))
}

// dumpKillFlags dumps the tree of root with --kill and flags into a new
// mounted store and returns the checkpoint's directory in the mount.
func dumpKillFlags(t *testing.T, root int, flags ...string) string {
	t.Helper()
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	args := append(append([]string{"dump", "-s", m.store, "--kill"}, flags...), itoa(root))
	id := lastLine(ckptfs(t, args...))
	return filepath.Join(m.mnt, id)
}

// restoreInNetns restores dir in n with flags; the restored tree (pids) is
// killed when the test ends.
func restoreInNetns(t *testing.T, n *netns, dir string, pids []int, flags ...string) {
	t.Helper()
	for _, pid := range pids {
		waitGone(t, pid) // the dumped tree, killed
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
	out, errOut, err := n.ckptfs(t, append(append([]string{"restore"}, flags...), dir)...)
	if err != nil {
		t.Fatalf("restore: %v\n%s%s", err, out, errOut)
	}
	if got := lastLine(out); got != itoa(pids[0]) {
		t.Fatalf("restore printed %q, want %d", got, pids[0])
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		for _, pid := range pids {
			waitGone(t, pid)
		}
	})
}

// tcpInfos returns the info files of the checkpoint's TCP sockets.
func tcpInfos(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for id, info := range objectInfos(t, dir) {
		if strings.HasPrefix(id, "tcp-") {
			out[id] = info
		}
	}
	return out
}

// waitLine waits until p's output holds a line with every one of words.
func waitLine(t *testing.T, p *program, words ...string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(p.Out)
		for _, l := range strings.Split(string(b), "\n") {
			all := true
			for _, w := range words {
				all = all && strings.Contains(l, w)
			}
			if all {
				return
			}
		}
	}
	b, _ := os.ReadFile(p.Out)
	t.Fatalf("%s printed no line with %q in 60s; output (first BAD and tail):\n%s\n...\n%s", p.Name, words, firstBad(string(b)), tail(string(b), 2000))
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestTCPPairInTree dumps (--kill --tcp-established) a parent and child
// streaming 4 MiB each way to each other over loopback TCP, bytes queued
// in both directions, restores them, and checks that every byte arrives
// once and in order (the program checks each) and the listener is back.
func TestTCPPairInTree(t *testing.T) {
	for _, fam := range []string{"4", "6"} {
		t.Run("ipv"+fam, func(t *testing.T) {
			n := newNetns(t)
			p := startInNetns(t, n, "tcppair", buildProg(t, "tcppair"), fam, "4")
			waitWhoTicks(t, p, "P", 5)
			waitWhoTicks(t, p, "C", 5)
			pids := treePids(p.Pid)
			if len(pids) != 2 {
				t.Fatalf("tree %v, want parent and child", pids)
			}
			dir := dumpKillFlags(t, p.Pid, "--tcp-established")
			p.kill()
			infos := tcpInfos(t, dir)
			var listen, est int
			queued := false
			for _, info := range infos {
				switch {
				case strings.Contains(info, "state: LISTEN\n"):
					listen++
				case strings.Contains(info, "state: ESTABLISHED\n"):
					est++
					queued = queued || !strings.Contains(info, "send-queue: 0\n") || !strings.Contains(info, "recv-queue: 0\n")
				}
			}
			if listen != 1 || est != 2 {
				t.Fatalf("checkpoint has %d listeners and %d connections, want 1 and 2", listen, est)
			}
			if !queued {
				t.Log("no bytes were queued at the dump (the stream was faster than the dump)")
			}
			restoreInNetns(t, n, dir, pids)
			p.Pid = pids[0]
			waitLine(t, p, "P ", " done ok")
			waitLine(t, p, "C ", " done ok")
			p.checkHealthy(t)
		})
	}
}

// TestTCPRefusesEstablished: without --tcp-established a dump of a tree
// holding an established connection is refused, naming the connection
// and the flag; the program runs on unharmed.
func TestTCPRefusesEstablished(t *testing.T) {
	n := newNetns(t)
	p := startInNetns(t, n, "tcppair", buildProg(t, "tcppair"), "4", "64")
	store := filepath.Join(t.TempDir(), "store")
	_, stderr, err := ckptfsErr(t, "dump", "-s", store, itoa(p.Pid))
	if err == nil {
		t.Fatal("dump of an established connection without --tcp-established succeeded")
	}
	for _, want := range []string{"process " + itoa(p.Pid) + " fd ", "--tcp-established", "TCP 127.0.0.1:", " ESTABLISHED"} {
		if !strings.Contains(stderr, want) {
			t.Fatalf("refusal %q does not say %q", stderr, want)
		}
	}
	p.checkUnharmed(t, store)
}

// TestTCPClose: restore --tcp-close gives the program its connections
// reset: each end reads ECONNRESET.
func TestTCPClose(t *testing.T) {
	n := newNetns(t)
	p := startInNetns(t, n, "tcppair", buildProg(t, "tcppair"), "4", "64")
	waitWhoTicks(t, p, "P", 3)
	pids := treePids(p.Pid)
	dir := dumpKillFlags(t, p.Pid, "--tcp-established")
	p.kill()
	restoreInNetns(t, n, dir, pids, "--tcp-close")
	p.Pid = pids[0]
	waitLine(t, p, "P ", " reset ok")
	waitLine(t, p, "C ", " reset ok")
}

// TestTCPHTTPServer dumps (--kill, no --tcp-established: only a listener)
// a Python http.server on 127.0.0.1, restores it, and a new client gets
// the file it serves.
func TestTCPHTTPServer(t *testing.T) {
	for _, c := range []struct{ name, bind string }{{"ipv4", "127.0.0.1"}, {"dual-stack", "::"}} {
		t.Run(c.name, func(t *testing.T) { testTCPHTTPServer(t, c.bind) })
	}
}

// testTCPHTTPServer is TestTCPHTTPServer with the server bound to bind;
// a dual-stack one ("::") is fetched over IPv4 and IPv6.
func testTCPHTTPServer(t *testing.T, bind string) {
	n := newNetns(t)
	www := t.TempDir()
	os.Chmod(www, 0o755)
	if err := os.WriteFile(filepath.Join(www, "hello.txt"), []byte("hello from before the dump\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "http.out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	cmd := n.command("python3", "-u", "-m", "http.server", "8000", "--bind", bind, "--directory", www)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, f, f
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &program{Name: "http.server", Cmd: cmd, Out: out, Pid: cmd.Process.Pid}
	t.Cleanup(p.kill)
	waitLine(t, p, "Serving HTTP")
	hosts := []string{"127.0.0.1"}
	if bind == "::" {
		hosts = append(hosts, "[::1]")
	}
	get := func() string {
		t.Helper()
		var got []string
		for _, h := range hosts {
			b, err := n.command("python3", "-c", `import sys, urllib.request
print(urllib.request.urlopen("http://"+sys.argv[1]+":8000/hello.txt", timeout=30).read().decode(), end="")`, h).CombinedOutput()
			if err != nil {
				t.Fatalf("GET from %s: %v\n%s", h, err, b)
			}
			got = append(got, string(b))
		}
		if len(got) == 2 && got[0] != got[1] {
			t.Fatalf("IPv4 and IPv6 clients got %q", got)
		}
		return got[0]
	}
	if got := get(); got != "hello from before the dump\n" {
		t.Fatalf("before the dump: %q", got)
	}
	pids := treePids(p.Pid)
	dir := dumpKillFlags(t, p.Pid)
	p.kill()
	restoreInNetns(t, n, dir, pids)
	if got := get(); got != "hello from before the dump\n" {
		t.Fatalf("after the restore: %q", got)
	}
}

// TestTCPDumpLeavesRunning: a dump --tcp-established without --kill puts
// the connections in repair mode only while the tree is frozen: the
// program streams on afterwards and every byte arrives.
func TestTCPDumpLeavesRunning(t *testing.T) {
	n := newNetns(t)
	p := startInNetns(t, n, "tcppair", buildProg(t, "tcppair"), "4", "4")
	waitWhoTicks(t, p, "C", 5)
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	ckptfs(t, "dump", "-s", m.store, "--tcp-established", itoa(p.Pid))
	waitLine(t, p, "P ", " done ok")
	waitLine(t, p, "C ", " done ok")
	p.checkHealthy(t)
}

// TestTCPRefusesHalfClosed: a connection half-closed by its peer
// (CLOSE-WAIT) and its peer (FIN-WAIT2) are refused by name, even with
// --tcp-established.
func TestTCPRefusesHalfClosed(t *testing.T) {
	n := newNetns(t)
	p := startInNetns(t, n, "halfclosed", "python3", "-c", `import socket, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
c = socket.create_connection(l.getsockname()); s, _ = l.accept(); l.close()
c.shutdown(socket.SHUT_WR)
while True:
    print("halfclosed tick ok", flush=True); time.sleep(0.1)`)
	p.waitTicks(t, 2)
	store := filepath.Join(t.TempDir(), "store")
	_, stderr, err := ckptfsErr(t, "dump", "-s", store, "--tcp-established", itoa(p.Pid))
	if err == nil {
		t.Fatal("dump of half-closed connections succeeded")
	}
	if !strings.Contains(stderr, "a TCP socket in state FIN-WAIT2") && !strings.Contains(stderr, "a TCP socket in state CLOSE-WAIT") {
		t.Fatalf("refusal %q does not name the state", stderr)
	}
	p.checkUnharmed(t, store)
}

// firstBad returns the lines around the first BAD line of out.
func firstBad(out string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.Contains(l, "BAD") {
			return strings.Join(lines[max(0, i-6):min(len(lines), i+2)], "\n")
		}
	}
	return "(no BAD line)"
}
