package tests

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The remote tests' S3 service is SeaweedFS (`weed server -s3`), a real
// object store run as its own process on loopback, one per test, when its
// binary is found: $CKPTFS_WEED, else `weed` on PATH (.ci/run builds and
// installs it). Without it they fall back to gofakes3 in this process and
// say so in the log.

// weedBinary returns the SeaweedFS binary, "" if there is none.
func weedBinary() string {
	if p := os.Getenv("CKPTFS_WEED"); p != "" {
		return p
	}
	p, _ := exec.LookPath("weed")
	return p
}

// weedServer is one running `weed server`: master, volume, filer and S3
// gateway in one process.
type weedServer struct {
	cmd *exec.Cmd
	s3  string // http://127.0.0.1:PORT
}

// freePortPair returns a loopback port p such that p and p+10000 (weed's
// gRPC port for a service on p) are both free now.
func freePortPair(t testing.TB) int {
	t.Helper()
	for range 200 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		if p > 55000 {
			l.Close()
			continue
		}
		g, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		if err == nil {
			g.Close()
			l.Close()
			return p
		}
		l.Close()
	}
	t.Fatal("no free pair of loopback ports for weed")
	return 0
}

// startWeed starts a SeaweedFS server with its data in a temporary
// directory, waits until its S3 gateway answers and stops it (its whole
// process group) when the test ends.
func startWeed(t testing.TB, bin string) *weedServer {
	t.Helper()
	dir := t.TempDir()
	ports := map[string]int{}
	for _, s := range []string{"master", "volume", "filer", "s3"} {
		ports[s] = freePortPair(t)
	}
	logf, err := os.Create(filepath.Join(dir, "weed.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "server", "-dir="+data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-master.port="+strconv.Itoa(ports["master"]), "-master.volumeSizeLimitMB=512",
		"-volume.port="+strconv.Itoa(ports["volume"]), "-volume.max=0",
		"-filer", "-filer.port="+strconv.Itoa(ports["filer"]),
		"-s3", "-s3.port="+strconv.Itoa(ports["s3"]))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true, Pdeathsig: unix.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start weed: %v", err)
	}
	w := &weedServer{cmd: cmd, s3: fmt.Sprintf("http://127.0.0.1:%d", ports["s3"])}
	t.Cleanup(func() {
		unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
		cmd.Wait()
	})
	// The gateway answers before the filer is ready: wait until a bucket
	// can be made and listed.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := w.do(http.MethodPut, "/ckptfs-ready"); err == nil {
			if err := w.do(http.MethodGet, "/ckptfs-ready"); err == nil {
				return w
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "weed.log"))
			t.Fatalf("weed server did not serve S3 within 60 s; its log:\n%s", tail(string(b), 4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// do sends an unsigned request (the gateway runs with no identities, so
// it checks none) and fails on any status but 2xx.
func (w *weedServer) do(method, path string) error {
	req, err := http.NewRequest(method, w.s3+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return nil
}

// weedHandler starts a SeaweedFS server holding bucket and returns a
// reverse proxy to its S3 gateway.
func weedHandler(t testing.TB, bin, bucket string) http.Handler {
	t.Helper()
	w := startWeed(t, bin)
	if err := w.do(http.MethodPut, "/"+bucket); err != nil {
		t.Fatalf("weed: make bucket %s: %v", bucket, err)
	}
	u, err := url.Parse(w.s3)
	if err != nil {
		t.Fatal(err)
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.FlushInterval = -1
	return p
}
