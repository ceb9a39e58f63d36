package tests

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// redisCmd sends one inline command to the redis at sock and returns its
// reply's lines.
func redisCmd(sock, cmd string, lines int) ([]string, error) {
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	var out []string
	for range lines {
		l, err := r.ReadString('\n')
		if err != nil {
			return out, err
		}
		out = append(out, strings.TrimRight(l, "\r\n"))
	}
	return out, nil
}

// TestRestorePidNSRedisCopies dumps a redis-server listening on a unix
// socket, with keys set, while it runs, and restores ten copies of the
// checkpoint at once, each into its own pid namespace; each copy (a `cp
// -a` of the checkpoint with its socket's path edited) answers with the
// dumped keys, and so does the original. It logs the time to restore ten
// copies at once as a ratio to one.
func TestRestorePidNSRedisCopies(t *testing.T) {
	needRoot(t)
	redis, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server (apt-get install redis-server; .ci/run installs it)")
	}
	built(t)
	work := t.TempDir()
	os.Chmod(work, 0o755)
	sock := filepath.Join(work, "redis.sock")
	p := startRedis(t, redis, work, sock)
	for _, kv := range [][2]string{{"k1", "hello"}, {"k2", "world"}} {
		if got, err := redisCmd(sock, "SET "+kv[0]+" "+kv[1], 1); err != nil || got[0] != "+OK" {
			t.Fatalf("SET: %q %v", got, err)
		}
	}
	m := mountStore(t, filepath.Join(t.TempDir(), "store"))
	ckpt := dumpLive(t, m, p.Pid)
	const n = 10
	copies := make([]string, n)
	socks := make([]string, n)
	for i := range copies {
		copies[i] = filepath.Join(work, fmt.Sprintf("copy%d", i))
		socks[i] = filepath.Join(work, fmt.Sprintf("c%d", i), "redis.sock")
		os.Mkdir(filepath.Dir(socks[i]), 0o755)
		if out, err := exec.Command("cp", "-a", ckpt, copies[i]).CombinedOutput(); err != nil {
			t.Fatalf("cp -a: %v\n%s", err, out)
		}
		infos, _ := filepath.Glob(filepath.Join(copies[i], "objects", "unix-*", "info"))
		edited := 0
		for _, info := range infos {
			b, _ := os.ReadFile(info)
			s := strings.Replace(string(b), fmt.Sprintf("name: %q\n", sock), fmt.Sprintf("name: %q\n", socks[i]), 1)
			if s != string(b) {
				edited++
				os.Chmod(info, 0o644)
				if err := os.WriteFile(info, []byte(s), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		if edited != 1 {
			t.Fatalf("copy %d: %d socket objects named %s", i, edited, sock)
		}
	}
	check := func(i int) {
		t.Helper()
		got, err := redisCmd(socks[i], "MGET k1 k2", 5)
		if want := []string{"*2", "$5", "hello", "$5", "world"}; err != nil || strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("copy %d: MGET k1 k2 = %q, %v", i, got, err)
		}
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	restore := func(i int) (string, error) {
		out, errOut, err := ckptfsErr(t, "restore", "--pidns", "--pidfile", copies[i]+".pid", copies[i])
		if err != nil {
			return "", fmt.Errorf("restore copy %d: %v\n%s%s", i, err, out, errOut)
		}
		return lastLine(out), nil
	}
	// One copy alone, then (that one killed) all ten at once.
	start := time.Now()
	out, err := restore(0)
	one := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	first := nsCopyOf(t, out, copies[0]+".pid")
	check(0)
	unix.Kill(first.init, unix.SIGKILL)
	waitGone(t, first.init)
	outs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start = time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = restore(i)
		}()
	}
	wg.Wait()
	ten := time.Since(start)
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		nsCopyOf(t, outs[i], copies[i]+".pid")
	}
	for i := range n {
		check(i)
	}
	if got, err := redisCmd(sock, "MGET k1 k2", 5); err != nil || got[2] != "hello" {
		t.Fatalf("original: %q %v", got, err)
	}
	t.Logf("restore of 1 copy %v, of %d copies at once %v: ratio %.2f", one.Round(time.Millisecond), n, ten.Round(time.Millisecond), float64(ten)/float64(one))
}

// startRedis starts redis-server on a unix socket only, no persistence,
// and waits until it answers.
func startRedis(t *testing.T, redis, dir, sock string) *program {
	t.Helper()
	log := filepath.Join(dir, "redis.log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	cmd := exec.Command(redis, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", dir)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, f, f
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &program{Name: "redis", Cmd: cmd, Out: log, Pid: cmd.Process.Pid}
	t.Cleanup(p.kill)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if got, err := redisCmd(sock, "PING", 1); err == nil && got[0] == "+PONG" {
			return p
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log)
			t.Fatalf("redis does not answer on %s:\n%s", sock, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
