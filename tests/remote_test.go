package tests

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"golang.org/x/sys/unix"
)

// The remote tests run a real S3 server: SeaweedFS on loopback where its
// binary is found (s3server_test.go), else gofakes3 over an in-memory
// backend in this process. Either is reached through a handler in this
// process on a loopback listener (httptest) that accepts only the access
// key "e2ekey" and counts the pack bytes served. The ckptfs binary reaches
// it as any S3 service, through AWS_ENDPOINT_URL and the AWS_* credentials.

type e2eS3 struct {
	url       string
	handler   http.Handler
	packBytes atomic.Int64 // bytes of packs served by GETs
}

func startE2ES3(t *testing.T, bucket string) *e2eS3 {
	t.Helper()
	s := newE2ES3Handler(t, bucket)
	hs := httptest.NewServer(s.handler)
	t.Cleanup(hs.Close)
	s.url = hs.URL
	t.Setenv("AWS_ENDPOINT_URL", hs.URL)
	t.Setenv("AWS_ACCESS_KEY_ID", "e2ekey")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "e2esecret")
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	return s
}

// newE2ES3Handler is the S3 service of the e2e tests over a fresh
// in-memory backend holding bucket, not yet served.
func newE2ES3Handler(t testing.TB, bucket string) *e2eS3 {
	t.Helper()
	var h http.Handler
	if bin := weedBinary(); bin != "" {
		h = weedHandler(t, bin, bucket) // s3server_test.go
	} else {
		t.Log("no weed (SeaweedFS) binary: the S3 server is gofakes3 in this process (.ci/run installs weed)")
		backend := s3mem.New()
		if err := backend.CreateBucket(bucket); err != nil {
			t.Fatal(err)
		}
		h = gofakes3.New(backend).Server()
	}
	s := &e2eS3{}
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Authorization"), "Credential=e2ekey/") {
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidAccessKeyId</Code><Message>unknown key</Message></Error>`))
			return
		}
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/packs/") {
			h.ServeHTTP(&countingWriter{ResponseWriter: w, n: &s.packBytes}, r)
			return
		}
		h.ServeHTTP(w, r)
	})
	return s
}

// countingWriter adds the bytes of a response to n before they are
// written: the client may have them, and the test go on, before the
// handler returns.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	c.n.Add(int64(len(b)))
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n - len(b)))
	return n, err
}

// mountDaemon mounts store (a directory or s3:// URL) with `ckptfs mount
// --daemon` and unmounts it when the test ends.
func mountDaemon(t *testing.T, store string) string {
	t.Helper()
	mnt := t.TempDir()
	out, err := exec.Command(filepath.Join(built(t), "ckptfs"), "mount", "--daemon", "-s", store, mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("mount %s: %v\n%s", store, err, out)
	}
	var daemon int
	if i := strings.Index(string(out), "daemon pid "); i >= 0 {
		fmt.Sscanf(string(out[i:]), "daemon pid %d", &daemon)
	}
	t.Cleanup(func() {
		var err error
		for i := 0; i < 100; i++ {
			if err = unix.Unmount(mnt, 0); err != unix.EBUSY {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("umount %s: %v", mnt, err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
		// The daemon may be this process's child (TestRemoteDumpRestore
		// is a subreaper while it restores): reap it, else wait for pid 1.
		for i := 0; i < 250 && daemon > 0 && unix.Kill(daemon, 0) == nil; i++ {
			var ws unix.WaitStatus
			if n, _ := unix.Wait4(daemon, &ws, unix.WNOHANG, nil); n == daemon {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if daemon > 0 && unix.Kill(daemon, 0) == nil {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", daemon))
			stack, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stack", daemon))
			t.Logf("mount daemon %d still runs 5s after umount: killed\n%s\n%s", daemon, st, stack)
			unix.Kill(daemon, unix.SIGKILL)
		}
	})
	return mnt
}

// TestRemoteDumpRestore dumps a program straight into a bucket twice,
// lists and verifies them there, copies them to a local store (the second
// copy sends only the pages the first did not), reads one page of a mount
// of the bucket (fetching a few segments only), and restores the program
// from that mount, from a mount of the local copy, and with --lazy from
// the bucket's mount: it resumes each time, checking its own memory.
func TestRemoteDumpRestore(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (ptrace of the test program, FUSE mount)")
	}
	s3 := startE2ES3(t, "ckpt")
	remote := "s3://ckpt/e2e"
	t0 := time.Now()
	p := startProgram(t, "static", 32)
	t.Logf("programs built and started in %v", time.Since(t0))
	p.waitTicks(t, 1)
	// Two dumps into the bucket: the second dedups against the first.
	t0 = time.Now()
	first := lastLine(ckptfs(t, "dump", "-s", remote, itoa(p.Pid)))
	t.Logf("dump into %s: %v", remote, time.Since(t0))
	p.waitTicks(t, 2)
	id := lastLine(ckptfs(t, "dump", "-s", remote, "--kill", itoa(p.Pid)))
	waitGone(t, p.Pid)
	ls := ckptfs(t, "ls", "-s", remote)
	if !strings.Contains(ls, id) || !strings.Contains(ls, first) {
		t.Fatalf("ls -s %s does not show %s and %s:\n%s", remote, first, id, ls)
	}
	t.Logf("ls -s %s:\n%s", remote, ls)
	ckptfs(t, "verify", "-s", remote)
	// Copies to a local store: the second sends only what changed.
	local := filepath.Join(t.TempDir(), "store")
	for _, c := range []string{first, id} {
		out := ckptfs(t, "--json", "copy", "-s", remote, "-d", local, c)
		var res struct {
			Copied []struct {
				PagesSent  int64 `json:"pages_sent"`
				BytesSent  int64 `json:"bytes_sent"`
				BytesTotal int64 `json:"bytes_total"`
			} `json:"copied"`
		}
		// Status lines first, then the result: the last JSON value.
		d := json.NewDecoder(strings.NewReader(out))
		for d.More() {
			if err := d.Decode(&res); err != nil {
				t.Fatalf("copy --json: %v\n%s", err, out)
			}
		}
		if len(res.Copied) != 1 {
			t.Fatalf("copy --json:\n%s", out)
		}
		r := res.Copied[0]
		t.Logf("copy %s to local: sent %d of %d bytes (%.3f)", c, r.BytesSent, r.BytesTotal, float64(r.BytesSent)/float64(r.BytesTotal))
	}
	ckptfs(t, "verify", "-s", local)

	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	times := map[string]time.Duration{}
	for _, run := range []struct {
		store string
		lazy  bool
	}{{remote, false}, {local, false}, {remote, true}} {
		store := run.store
		mnt := mountDaemon(t, store)
		if store == remote && !run.lazy {
			readOnePage(t, s3, filepath.Join(mnt, id))
		}
		before := len(p.ticks())
		fetched := s3.packBytes.Load()
		start := time.Now()
		var logPath string
		if run.lazy {
			var pid int
			pid, logPath = lazyRestore(t, filepath.Join(mnt, id))
			if pid != p.Pid {
				t.Fatalf("restore --lazy from %s: pid %d, want %d", store, pid, p.Pid)
			}
		} else {
			out, log, err := ckptfsErr(t, "restore", filepath.Join(mnt, id))
			times[store] = time.Since(start)
			if err != nil {
				t.Fatalf("restore from %s: %v\n%s%s", store, err, out, log)
			}
			if got := lastLine(out); got != itoa(p.Pid) {
				t.Fatalf("restore from %s printed %q, want pid %d", store, got, p.Pid)
			}
		}
		lines := p.waitTicks(t, 3)
		p.checkHealthy(t)
		if !strings.Contains(lines[before], " tick ") {
			t.Fatalf("unexpected line %q", lines[before])
		}
		if run.lazy {
			log := waitLazyServer(t, logPath)
			if !strings.Contains(log, "all pages in, ") {
				t.Fatalf("lazy page server:\n%s", log)
			}
			t.Logf("restored --lazy from %s, running after %v", store, time.Since(start))
		} else {
			t.Logf("restored from %s in %v (pack bytes fetched from S3: %d)", store, times[store], s3.packBytes.Load()-fetched)
		}
		unix.Kill(p.Pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(p.Pid, &ws, 0, nil)
		waitGone(t, p.Pid)
	}
	t.Logf("restore from S3 / from local: %.2f", times[remote].Seconds()/times[local].Seconds())
}

// TestRemoteCLIErrors: bad credentials, an absent store and an
// unreachable endpoint give clear errors and the documented exit codes.
func TestRemoteCLIErrors(t *testing.T) {
	startE2ES3(t, "ckpt")
	run := func(env []string, args ...string) (string, int) {
		cmd := exec.Command(filepath.Join(built(t), "ckptfs"), args...)
		cmd.Env = append(os.Environ(), env...)
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	out, code := run(nil, "ls", "-s", "s3://ckpt/none")
	if code != 10 || !strings.Contains(out, "not a ckptfs store") && !strings.Contains(out, "no ckptfs-store") {
		t.Errorf("ls of an absent store: exit %d, %s", code, out)
	}
	out, code = run([]string{"AWS_ACCESS_KEY_ID=wrong"}, "ls", "-s", "s3://ckpt/none")
	if code != 1 || !strings.Contains(out, "access denied") {
		t.Errorf("ls with a bad key: exit %d, %s", code, out)
	}
	t.Logf("bad key: exit %d: %s", code, strings.TrimSpace(out))
	out, code = run(nil, "--s3-endpoint", "http://127.0.0.1:1", "ls", "-s", "s3://ckpt/none")
	if code != 1 || !strings.Contains(out, "cannot reach") {
		t.Errorf("ls of an unreachable endpoint: exit %d, %s", code, out)
	}
	t.Logf("unreachable: exit %d: %s", code, strings.TrimSpace(out))
}

// readOnePage reads one page of the largest vma of checkpoint dir (a
// mount of a remote store) and checks that the mount fetched a few
// segments of the packs, not the whole checkpoint.
func readOnePage(t *testing.T, s3 *e2eS3, dir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "tasks", "*", "vmas", "*", "pages"))
	var big string
	var size int64
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.Size() > size {
			big, size = f, st.Size()
		}
	}
	if big == "" {
		t.Fatalf("no vma pages under %s", dir)
	}
	f, err := os.Open(big)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	before := s3.packBytes.Load()
	off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA)
	if err != nil {
		t.Fatalf("SEEK_DATA %s: %v", big, err)
	}
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatal(err)
	}
	fetched := s3.packBytes.Load() - before
	t.Logf("one page of %s (%d bytes): %d pack bytes fetched from S3", big, size, fetched)
	if fetched == 0 || fetched > 8<<20 {
		t.Errorf("reading one page fetched %d pack bytes (want some, at most the kernel's 4 MiB readahead in 1 MiB segments)", fetched)
	}
}
