package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Processes of users other than the one running ckptfs, and trees that mix
// users: each task is dumped and restored with its own credentials.

// unprivileged is the user the test servers run as: nobody, which every
// system has.
const (
	nobodyUID = 65534
	nobodyGID = 65534
)

// sharedTempDir makes a temporary directory other users can reach
// (t.TempDir's parents are 0700), removed when the test ends.
func sharedTempDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// asNobody makes cmd run as nobody:nogroup with no supplementary groups.
func asNobody(cmd *exec.Cmd) {
	cmd.SysProcAttr = &unix.SysProcAttr{
		Setpgid:    true,
		Credential: &syscall.Credential{Uid: nobodyUID, Gid: nobodyGID, Groups: []uint32{}},
	}
}

// psql runs one SQL command on the postgres at sock (a directory) as the
// superuser pg and returns its unaligned output.
func psql(sock, sql string) (string, error) {
	out, err := exec.Command("psql", "-X", "-h", sock, "-U", "pg", "-d", "postgres", "-Atc", sql).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestPostgresAsItsUser dumps (--kill) a postgres cluster run by nobody
// with unix sockets only (the postmaster and its background workers, each
// a task of uid nobody dumped by root) and restores it: the rows and an md5
// over the table read back are the ones written before the dump, every
// restored task has nobody's credentials, and new writes are accepted.
//
// The cluster uses postgres's default dynamic_shared_memory_type=posix:
// its segments are /dev/shm files the checkpoint maps again.
func TestPostgresAsItsUser(t *testing.T) {
	needRoot(t)
	postgres, err := exec.LookPath("postgres")
	if err != nil {
		t.Skip("no postgres binary on PATH")
	}
	initdb, err := exec.LookPath("initdb")
	if err != nil {
		t.Skip("no initdb on PATH")
	}
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("no psql on PATH")
	}
	built(t)
	dir := sharedTempDir(t, "ckptfs-pg-")
	data := filepath.Join(dir, "data")
	if err := os.Chown(dir, nobodyUID, nobodyGID); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(initdb, "-D", data, "-A", "trust", "-U", "pg", "--no-sync")
	asNobody(cmd)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	log, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	// The log is nobody's, as pg_ctl -l makes it: restore opens every
	// path as its task (docs/security.md), and nobody may not open a
	// root-owned file for writing.
	if err := log.Chown(nobodyUID, nobodyGID); err != nil {
		t.Fatal(err)
	}
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	cmd = exec.Command(postgres, "-D", data, "-k", dir, "-c", "listen_addresses=",
		"-c", "dynamic_shared_memory_type=posix", "-c", "fsync=off")
	asNobody(cmd)
	cmd.Dir = dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &program{Name: "postgres", Cmd: cmd, Out: log.Name(), Pid: cmd.Process.Pid}
	t.Cleanup(p.kill)
	waitPostgres(t, dir, log.Name())

	const table = "create table t(a int primary key, b text); " +
		"insert into t select g, md5(g::text) from generate_series(1, 5000) g"
	if out, err := psql(dir, table); err != nil {
		t.Fatalf("create table: %v\n%s", err, out)
	}
	const sum = "select count(*), md5(string_agg(a::text || b, ',' order by a)) from t"
	before, err := psql(dir, sum)
	if err != nil {
		t.Fatalf("md5: %v\n%s", err, before)
	}

	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	ckpt, pids := dumpKill(t, p.Pid)
	if len(pids) < 3 {
		t.Fatalf("checkpoint has tasks %v: want the postmaster and its workers", pids)
	}
	if got := lastLine(ckptfs(t, "restore", ckpt)); got != itoa(p.Pid) {
		t.Fatalf("restore printed %q, want %d", got, p.Pid)
	}
	defer func() {
		// A fast shutdown, then the postmaster's death, reaped by us.
		unix.Kill(p.Pid, unix.SIGINT)
		for _, pid := range pids {
			waitGone(t, pid)
		}
	}()
	for _, pid := range pids {
		st, err := os.ReadFile("/proc/" + itoa(pid) + "/status")
		if err != nil {
			continue // a worker that exited (postgres restarts some)
		}
		for _, l := range strings.Split(string(st), "\n") {
			if (strings.HasPrefix(l, "Uid:") || strings.HasPrefix(l, "Gid:")) &&
				len(strings.Fields(l)) == 5 && strings.Count(l, "65534") != 4 {
				t.Errorf("restored task %d: %s, want nobody's ids", pid, l)
			}
		}
	}
	after, err := psql(dir, sum)
	if err != nil || after != before {
		t.Fatalf("after restore: %q, %v; before: %q\n%s", after, err, before, readLog(log.Name()))
	}
	if out, err := psql(dir, "insert into t values (5001, 'after'); select count(*) from t where b = 'after'"); err != nil || out != "INSERT 0 1\n1" {
		t.Fatalf("write after restore: %q, %v", out, err)
	}
	t.Logf("postgres as nobody: %d tasks restored, %s", len(pids), after)
}

// waitPostgres waits until the postgres with its socket in dir answers.
func waitPostgres(t *testing.T, dir, log string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if out, err := psql(dir, "select 1"); err == nil && out == "1" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres does not answer on %s:\n%s", dir, readLog(log))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// TestNginxWithUnprivilegedWorkers dumps (--kill) an nginx whose master
// runs as root and whose two workers run as nobody, serving a file on a
// unix socket, and restores it: the master is root and the workers nobody
// again, and the file is served byte for byte.
func TestNginxWithUnprivilegedWorkers(t *testing.T) {
	needRoot(t)
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("no nginx (apt-get install nginx-light; .ci/run installs it)")
	}
	built(t)
	dir := sharedTempDir(t, "ckptfs-nginx-")
	www := filepath.Join(dir, "www")
	os.Mkdir(www, 0o755)
	body := make([]byte, 100<<10)
	for i := range body {
		body[i] = byte('a' + i*7%26)
	}
	if err := os.WriteFile(filepath.Join(www, "f.txt"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "nginx.sock")
	conf := filepath.Join(dir, "nginx.conf")
	cfg := "daemon off;\nmaster_process on;\nworker_processes 2;\nuser nobody nogroup;\n" +
		"pid " + filepath.Join(dir, "nginx.pid") + ";\nerror_log " + filepath.Join(dir, "error.log") + ";\n" +
		"events { worker_connections 64; }\n" +
		"http {\n access_log off;\n client_body_temp_path " + dir + "/body;\n proxy_temp_path " + dir + "/proxy;\n" +
		" fastcgi_temp_path " + dir + "/fcgi;\n uwsgi_temp_path " + dir + "/uwsgi;\n scgi_temp_path " + dir + "/scgi;\n" +
		" server {\n  listen unix:" + sock + ";\n  root " + www + ";\n }\n}\n"
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	cmd := exec.Command(nginx, "-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, log, log
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &program{Name: "nginx", Cmd: cmd, Out: log.Name(), Pid: cmd.Process.Pid}
	t.Cleanup(p.kill)

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
		DisableKeepAlives: true,
	}}
	get := func() ([]byte, error) {
		resp, err := client.Get("http://nginx/f.txt")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("status %s", resp.Status)
		}
		return io.ReadAll(resp.Body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := get(); err == nil && bytes.Equal(b, body) && len(treePids(p.Pid)) == 3 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("nginx does not serve f.txt: %v\n%s%s", err, readLog(log.Name()), readLog(filepath.Join(dir, "error.log")))
		}
		time.Sleep(50 * time.Millisecond)
	}
	uids := func(pid int) string {
		st, _ := os.ReadFile("/proc/" + itoa(pid) + "/status")
		for _, l := range strings.Split(string(st), "\n") {
			if strings.HasPrefix(l, "Uid:") {
				return strings.Join(strings.Fields(l)[1:], " ")
			}
		}
		return ""
	}
	checkUsers := func(when string, pids []int) {
		t.Helper()
		for i, pid := range pids {
			want := "65534 65534 65534 65534"
			if i == 0 {
				want = "0 0 0 0"
			}
			if got := uids(pid); got != want {
				t.Errorf("%s: task %d has uids %q, want %q", when, pid, got, want)
			}
		}
	}
	checkUsers("before dump", treePids(p.Pid))

	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	ckpt, pids := dumpKill(t, p.Pid)
	if got := lastLine(ckptfs(t, "restore", ckpt)); got != itoa(p.Pid) {
		t.Fatalf("restore printed %q, want %d", got, p.Pid)
	}
	defer func() {
		unix.Kill(p.Pid, unix.SIGTERM) // nginx's fast shutdown stops the workers too
		for _, pid := range pids {
			waitGone(t, pid)
		}
	}()
	checkUsers("after restore", pids)
	for i := range 4 {
		if b, err := get(); err != nil || !bytes.Equal(b, body) {
			t.Fatalf("request %d after restore: %d bytes, %v\n%s", i, len(b), err, readLog(filepath.Join(dir, "error.log")))
		}
	}
}
