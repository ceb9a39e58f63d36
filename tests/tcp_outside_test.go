package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/netlock"
)

// startTCPRedis starts redis-server on 127.0.0.1:6379 in n (no
// persistence) and a client outside its tree holding one connection to it.
func startTCPRedis(t *testing.T, n *netns) (redis, client *program) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server (apt-get install redis-server)")
	}
	dir := t.TempDir()
	log := filepath.Join(dir, "redis.log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	cmd := n.command(bin, "--port", "6379", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, f, f
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	redis = &program{Name: "redis", Cmd: cmd, Out: log, Pid: cmd.Process.Pid}
	t.Cleanup(redis.kill)
	_, file, _, _ := runtime.Caller(0)
	client = startInNetns(t, n, "redisclient", "python3", filepath.Join(filepath.Dir(file), "progs", "redisclient.py"), "6379")
	client.waitTicks(t, 5)
	return redis, client
}

func lockTables(t *testing.T, n *netns) []string {
	t.Helper()
	ts, err := netlock.Tables("/run/netns/" + n.name)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// TestTCPRedisOutsideClient dumps (--kill --tcp-established) a redis
// serving a client outside the dumped tree on one connection; while redis
// is down the client's command waits (the lock drops its packets: no
// reset), and after the restore the same connection carries on with every
// reply right; the lock table is gone and a new client is served too.
func TestTCPRedisOutsideClient(t *testing.T) {
	n := newNetns(t)
	redis, client := startTCPRedis(t, n)
	pids := treePids(redis.Pid)
	dir := dumpKillFlags(t, redis.Pid, "--tcp-established")
	redis.kill()
	if ts := lockTables(t, n); len(ts) != 1 {
		t.Fatalf("lock tables while redis is down: %v, want one", ts)
	}
	var lock string
	for _, info := range tcpInfos(t, dir) {
		if strings.Contains(info, "lock: ") {
			lock = info
		}
	}
	if lock == "" {
		t.Fatal("no connection of the checkpoint names its lock")
	}
	// The client sends its next command while redis is down: no reply,
	// no reset; it retransmits.
	before := len(client.ticks())
	time.Sleep(time.Second)
	client.checkHealthy(t)
	if got := len(client.ticks()); got > before+1 {
		t.Fatalf("the client got %d replies while redis was down", got-before)
	}
	restoreInNetns(t, n, dir, pids)
	if ts := lockTables(t, n); len(ts) != 0 {
		t.Fatalf("lock tables after the restore: %v", ts)
	}
	client.waitTicks(t, 10)
	client.checkHealthy(t)
	// A new client is served by the restored listener.
	out, err := n.command("python3", "-c", `import socket
s = socket.create_connection(("127.0.0.1", 6379))
s.sendall(b"GET c\r\n")
print(s.makefile("rb").readline().decode().strip())`).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "$") {
		t.Fatalf("a new client: %v %q", err, out)
	}
}

// TestTCPLockRemovedOnFailedRestore: a restore that fails (the port is
// taken) removes the lock too; the client then sees its connection reset.
func TestTCPLockRemovedOnFailedRestore(t *testing.T) {
	n := newNetns(t)
	redis, client := startTCPRedis(t, n)
	pids := treePids(redis.Pid)
	dir := dumpKillFlags(t, redis.Pid, "--tcp-established")
	redis.kill()
	for _, pid := range pids {
		waitGone(t, pid)
	}
	if ts := lockTables(t, n); len(ts) != 1 {
		t.Fatalf("lock tables while redis is down: %v, want one", ts)
	}
	squatter := startInNetns(t, n, "squatter", "python3", "-c", `import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 6379)); s.listen(1)
while True:
    print("squatter tick ok", flush=True); time.sleep(0.1)`)
	_ = squatter
	out, errOut, err := n.ckptfs(t, "restore", dir)
	if err == nil {
		t.Fatalf("restore with the port taken succeeded: %s", out)
	}
	if !strings.Contains(errOut, "address already in use") {
		t.Errorf("restore error %q does not say the address is in use", errOut)
	}
	if ts := lockTables(t, n); len(ts) != 0 {
		t.Fatalf("lock tables after the failed restore: %v", ts)
	}
	waitLine(t, client, "client ", " error ")
}
