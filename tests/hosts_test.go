package tests

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// "Hosts" for the tests of moving checkpoints between machines. A host is
// a network namespace with its own loopback and a mount namespace of its
// own, held by a process the test starts (unshare --net --mount sleep),
// entered by every command run "on" it (nsenter). Its private directory,
// home, is a tmpfs mounted in its mount namespace only: its local store,
// its cache (XDG_CACHE_HOME) and TMPDIR live there, so no other host (nor
// the test itself) sees them; elsewhere the path is an empty directory.
// The hosts reach the S3 server, which runs in the test process in the
// root namespaces, over a veth pair per host with addresses of its own.
// Same pid namespace: a program restored on host B keeps its pid.

type host struct {
	name     string
	holder   *exec.Cmd
	home     string // private tmpfs
	endpoint string // the S3 server as this host reaches it
	addr     string // the root namespace's end of this host's veth pair
}

var hostSeq atomic.Int64

// hostsS3 is the S3 server of the host tests: SeaweedFS or gofakes3 (startE2ES3's
// handler) served on a listener per host, counting the bytes it reads
// from its connections: what the hosts sent it, headers included.
type hostsS3 struct {
	*e2eS3
	srv      *http.Server
	received atomic.Int64
}

// newHostsS3 starts the server; hosts add listeners with listen.
func newHostsS3(t testing.TB, bucket string) *hostsS3 {
	t.Helper()
	s := &hostsS3{e2eS3: newE2ES3Handler(t, bucket)}
	s.srv = &http.Server{Handler: s.handler}
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// listen serves on addr:0 and returns the endpoint URL.
func (s *hostsS3) listen(t testing.TB, addr string) string {
	t.Helper()
	var l net.Listener
	var err error
	// The address was just added to the veth: it may still be tentative.
	for i := 0; i < 100; i++ {
		if l, err = net.Listen("tcp", addr+":0"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	go s.srv.Serve(countingListener{l, &s.received})
	return "http://" + l.Addr().String()
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// newHost makes a host reaching s; it is torn down when the test ends.
func newHost(t testing.TB, s *hostsS3, name string) *host {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("hosts need root (network and mount namespaces, veth pairs, ptrace, FUSE)")
	}
	for _, tool := range []string{"ip", "unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s to make a host's namespaces", tool)
		}
	}
	seq := hostSeq.Add(1)
	h := &host{name: name, home: filepath.Join(t.TempDir(), name)}
	if err := os.Mkdir(h.home, 0o700); err != nil {
		t.Fatal(err)
	}
	h.holder = exec.Command("unshare", "--net", "--mount", "--propagation", "private", "sleep", "infinity")
	if err := h.holder.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	t.Cleanup(func() {
		h.holder.Process.Kill()
		h.holder.Wait()
	})
	h.waitNamespaces(t)
	// The veth pair: ROOT end here, PEER end in the host's namespace.
	pid := h.holder.Process.Pid
	rootEnd := fmt.Sprintf("ckh%d-%d", os.Getpid()%100000, seq)
	peerEnd := rootEnd + "p"
	subnet := fmt.Sprintf("10.%d.%d", 100+os.Getpid()%100, seq%250)
	h.addr = subnet + ".1"
	runRoot(t, "ip", "link", "add", rootEnd, "type", "veth", "peer", "name", peerEnd, "netns", itoa(pid))
	t.Cleanup(func() { exec.Command("ip", "link", "del", rootEnd).Run() })
	runRoot(t, "ip", "addr", "add", h.addr+"/30", "dev", rootEnd)
	runRoot(t, "ip", "link", "set", rootEnd, "up")
	h.run(t, "ip", "link", "set", "lo", "up")
	h.run(t, "ip", "addr", "add", subnet+".2/30", "dev", peerEnd)
	h.run(t, "ip", "link", "set", peerEnd, "up")
	// Through the root namespace the host reaches every address of it:
	// the S3 server as another host names it too.
	h.run(t, "ip", "route", "add", "default", "via", h.addr)
	h.run(t, "mount", "-t", "tmpfs", "-o", "mode=0700", "ckptfs-"+name, h.home)
	for _, d := range []string{"cache", "tmp"} {
		h.run(t, "mkdir", filepath.Join(h.home, d))
	}
	h.endpoint = s.listen(t, h.addr)
	return h
}

// waitNamespaces waits until the holder has unshared (it runs sleep).
func (h *host) waitNamespaces(t testing.TB) {
	t.Helper()
	self, _ := os.Readlink("/proc/self/ns/mnt")
	for i := 0; i < 500; i++ {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", h.holder.Process.Pid))
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", h.holder.Process.Pid))
		if strings.TrimSpace(string(comm)) == "sleep" && ns != "" && ns != self {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("host %s: unshare did not make its namespaces", h.name)
}

// runRoot runs a command in the root namespaces and fails the test on error.
func runRoot(t testing.TB, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}

// argv is argv run on the host (nsenter execs it: same pid).
func (h *host) argv(argv ...string) []string {
	return append([]string{"nsenter", "-t", itoa(h.holder.Process.Pid), "--net", "--mount", "--"}, argv...)
}

// env is the environment of commands on the host.
func (h *host) env() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "AWS_") && !strings.HasPrefix(e, "XDG_CACHE_HOME=") && !strings.HasPrefix(e, "TMPDIR=") {
			env = append(env, e)
		}
	}
	return append(env, "AWS_ENDPOINT_URL="+h.endpoint, "AWS_ACCESS_KEY_ID=e2ekey", "AWS_SECRET_ACCESS_KEY=e2esecret",
		"AWS_REGION=us-east-1", "XDG_CACHE_HOME="+filepath.Join(h.home, "cache"), "TMPDIR="+filepath.Join(h.home, "tmp"))
}

// command is exec.Command of argv on the host.
func (h *host) command(argv ...string) *exec.Cmd {
	a := h.argv(argv...)
	cmd := exec.Command(a[0], a[1:]...)
	cmd.Env = h.env()
	return cmd
}

// run runs argv on the host and fails the test on error.
func (h *host) run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := h.command(argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("on %s: %s: %v\n%s", h.name, strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// ckptfsErr runs ckptfs on the host: stdout, stderr and the error.
func (h *host) ckptfsErr(t testing.TB, args ...string) (string, string, error) {
	t.Helper()
	cmd := h.command(append([]string{filepath.Join(built(t), "ckptfs")}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// ckptfs runs ckptfs on the host and returns stdout; it fails the test on error.
func (h *host) ckptfs(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := h.ckptfsErr(t, args...)
	if err != nil {
		t.Fatalf("on %s: ckptfs %s: %v\nstdout:\n%s\nstderr:\n%s", h.name, strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// start starts hostmem (mib MiB, ticks every period ms, SIGUSR1
// rewriting half its pages) on the host.
func (h *host) start(t testing.TB, mib, periodMs int) *program {
	t.Helper()
	return h.startEvery(t, mib, periodMs, 2)
}

// startEvery is start with SIGUSR1 rewriting every every-th page.
func (h *host) startEvery(t testing.TB, mib, periodMs, every int) *program {
	t.Helper()
	prog := buildProg(t, "hostmem", "-O2")
	return startArgv(t, "hostmem-on-"+h.name, h.argv(prog, itoa(mib), itoa(periodMs), itoa(every)))
}

// private checks that the host's home is its own: the other host sees an
// empty directory where it is.
func (h *host) private(t testing.TB, other *host) {
	t.Helper()
	if out := other.run(t, "ls", "-A", h.home); strings.TrimSpace(out) != "" {
		t.Fatalf("host %s sees host %s's private directory %s:\n%s", other.name, h.name, h.home, out)
	}
	if out := h.run(t, "ls", "-A", h.home); !strings.Contains(out, "cache") {
		t.Fatalf("host %s: its home %s holds %q", h.name, h.home, out)
	}
}

// mount mounts store on the host (ckptfs mount --daemon) under its home;
// it is unmounted, on the host, when the test ends.
func (h *host) mount(t testing.TB, store string) string {
	t.Helper()
	mnt := filepath.Join(h.home, fmt.Sprintf("mnt%d", hostSeq.Add(1)))
	h.run(t, "mkdir", mnt)
	out := h.ckptfs(t, "mount", "--daemon", "-s", store, mnt)
	var daemon int
	if i := strings.Index(out, "daemon pid "); i >= 0 {
		fmt.Sscanf(out[i:], "daemon pid %d", &daemon)
	}
	t.Cleanup(func() {
		var out []byte
		var err error
		for i := 0; i < 100; i++ {
			if out, err = h.command("umount", mnt).CombinedOutput(); err == nil || !strings.Contains(string(out), "busy") {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("on %s: umount %s: %v %s", h.name, mnt, err, out)
			h.command("umount", "-l", mnt).Run()
		}
		reapDaemon(t, daemon)
	})
	return mnt
}

// reapDaemon waits for a mount daemon to exit after its umount (reaping
// it if it is this process's child), killing it after 5 s.
func reapDaemon(t testing.TB, daemon int) {
	for i := 0; i < 250 && daemon > 0 && unix.Kill(daemon, 0) == nil; i++ {
		var ws unix.WaitStatus
		if n, _ := unix.Wait4(daemon, &ws, unix.WNOHANG, nil); n == daemon {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	if daemon > 0 && unix.Kill(daemon, 0) == nil {
		t.Logf("mount daemon %d still runs 5s after umount: killed", daemon)
		unix.Kill(daemon, unix.SIGKILL)
	}
}

// restored is a program restored by a test (not its child): it is killed
// when the test ends.
func restored(t testing.TB, pid int) {
	t.Cleanup(func() { stopRestored(pid) })
}

// stopRestored kills a restored program and reaps it if it is ours.
func stopRestored(pid int) {
	if unix.Kill(pid, unix.SIGKILL) != nil {
		return
	}
	for i := 0; i < 500; i++ {
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
