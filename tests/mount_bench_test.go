package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

// shTree is `sh -c 'for i in $(seq N-1); do sleep 1000 & done; wait'`: a
// tree of N processes.
type shTree struct {
	cmd  *exec.Cmd
	pid  int
	kids []int
}

// startShTree starts a tree of n processes and waits until every child
// runs sleep; the test's end kills the children, then the shell.
func startShTree(tb testing.TB, n int) *shTree {
	tb.Helper()
	cmd := exec.Command("sh", "-c", fmt.Sprintf("for i in $(seq %d); do sleep 1000 & done; wait", n-1))
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	s := &shTree{cmd: cmd, pid: cmd.Process.Pid}
	tb.Cleanup(s.kill)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", s.pid, s.pid))
		s.kids = s.kids[:0]
		sleeping := 0
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			s.kids = append(s.kids, pid)
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(comm) == "sleep\n" {
				sleeping++
			}
		}
		if sleeping == n-1 {
			return s
		}
		if time.Now().After(deadline) {
			tb.Fatalf("sh tree: %d of %d children sleeping after 10s", sleeping, n-1)
		}
	}
}

// kill kills the children the shell started, then the shell, and reaps it.
func (s *shTree) kill() {
	if s.cmd == nil {
		return
	}
	for _, pid := range s.kids {
		unix.Kill(pid, unix.SIGKILL)
	}
	unix.Kill(s.pid, unix.SIGKILL)
	s.cmd.Wait()
	s.cmd = nil
}

// timeCmd runs a command with output to /dev/null and returns how long it took.
func timeCmd(tb testing.TB, name string, args ...string) time.Duration {
	tb.Helper()
	cmd := exec.Command(name, args...)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	start := time.Now()
	if err := cmd.Run(); err != nil || errOut.Len() > 0 {
		tb.Fatalf("%s %v: %v\n%s", name, args, err, errOut.String())
	}
	return time.Since(start)
}

// BenchmarkMountLsR: `ls -R` (and `ls -lR`) of a 50-task checkpoint through
// a fresh mount (cold: the checkpoint is loaded and rendered, the kernel
// caches nothing yet) and again (warm), against the same commands on a
// `cp -a` copy of the checkpoint on the local disk.
func BenchmarkMountLsR(b *testing.B) {
	const tasks = 50
	sh := startShTree(b, tasks)
	store := filepath.Join(b.TempDir(), "store")
	id := lastLine(ckptfs(b, "dump", "-s", store, itoa(sh.pid)))
	copyDir := filepath.Join(b.TempDir(), id)
	m := mountStore(b, store)
	if out, err := exec.Command("cp", "-a", filepath.Join(m.mnt, id), copyDir).CombinedOutput(); err != nil {
		b.Fatalf("cp -a: %v\n%s", err, out)
	}
	m.unmount(b)
	if ents, _ := os.ReadDir(filepath.Join(copyDir, "tasks")); len(ents) != tasks {
		b.Fatalf("copy has %d tasks, want %d", len(ents), tasks)
	}
	var nfiles int
	filepath.WalkDir(copyDir, func(string, os.DirEntry, error) error { nfiles++; return nil })

	var cold, warm, copyLs, warmL, copyLsL time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		m := mountStore(b, store)
		dir := filepath.Join(m.mnt, id)
		b.StartTimer()
		cold += timeCmd(b, "ls", "-R", dir)
		b.StopTimer()
		warm += timeCmd(b, "ls", "-R", dir)
		warmL += timeCmd(b, "ls", "-lR", dir)
		copyLs += timeCmd(b, "ls", "-R", copyDir)
		copyLsL += timeCmd(b, "ls", "-lR", copyDir)
		m.unmount(b)
	}
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / n }
	b.ReportMetric(float64(nfiles), "entries")
	b.ReportMetric(ms(cold), "mount-cold-ms")
	b.ReportMetric(ms(warm), "mount-warm-ms")
	b.ReportMetric(ms(copyLs), "copy-ms")
	b.ReportMetric(float64(cold)/float64(copyLs), "cold/copy")
	b.ReportMetric(float64(warm)/float64(copyLs), "warm/copy")
	b.ReportMetric(float64(warmL)/float64(copyLsL), "lR-warm/copy")
}

// BenchmarkMountReadPages: reading the 1 GiB region of a counter's
// checkpoint through the mount with 1 MiB preads (cold, then again from
// the kernel's page cache) against reading the same pages straight from
// the store with Store.ReadPage in this process, and, for a 64 MiB part,
// with ReadPage over the mount's socket (dedup.Client).
func BenchmarkMountReadPages(b *testing.B) {
	const mib = 1024
	p := startProgram(b, "static", mib)
	store := filepath.Join(b.TempDir(), "store")
	id := lastLine(ckptfs(b, "dump", "-s", store, itoa(p.Pid)))
	pid := p.Pid
	p.kill() // its checking loop would compete for the CPU

	s, err := dedup.Open(store)
	if err != nil {
		b.Fatal(err)
	}
	c, err := s.Load(id)
	s.Close()
	if err != nil {
		b.Fatal(err)
	}
	var v *image.VMA
	for _, x := range c.Task(pid).VMAs {
		if v == nil || len(x.Pages) > len(v.Pages) {
			v = x
		}
	}
	if len(v.Pages) < (mib-1)<<20/image.PageSize {
		b.Fatalf("largest vma %s has %d pages", v.DirName(), len(v.Pages))
	}
	bytesSaved := int64(len(v.Pages)) * image.PageSize

	buf := make([]byte, 1<<20)
	readFile := func(path string) time.Duration {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		start := time.Now()
		for off := int64(0); off < int64(v.Len()); off += int64(len(buf)) {
			n := min(int64(len(buf)), int64(v.Len())-off)
			if _, err := f.ReadAt(buf[:n], off); err != nil {
				b.Fatalf("read %s at %d: %v", path, off, err)
			}
		}
		return time.Since(start)
	}
	want := counterPattern(mib << 20)
	var cold, warm, local, rpc time.Duration
	const rpcPages = 64 << 20 / image.PageSize
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		m := mountStore(b, store)
		path := image.PagesPath(filepath.Join(m.mnt, id), pid, v)
		b.StartTimer()
		cold += readFile(path)
		b.StopTimer()
		warm += readFile(path)
		// The content is right: the second MiB of the vma is the pattern
		// (the region starts after malloc's 16-byte header).
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		_, err = f.ReadAt(buf, 1<<20)
		f.Close()
		if err != nil || !bytes.Equal(buf, want[1<<20-16:2<<20-16]) {
			b.Fatalf("pages read through the mount are not the counter's pattern (%v)", err)
		}
		r, err := dedup.OpenRepo(store)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for _, pg := range v.Pages[:rpcPages] {
			if err := r.ReadPage(pg.Hash, buf[:image.PageSize]); err != nil {
				b.Fatal(err)
			}
		}
		rpc += time.Since(start)
		r.Close()
		m.unmount(b)

		s, err := dedup.Open(store)
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		for k, pg := range v.Pages {
			o := (k % (len(buf) / image.PageSize)) * image.PageSize
			if err := s.ReadPage(pg.Hash, buf[o:o+image.PageSize]); err != nil {
				b.Fatal(err)
			}
		}
		local += time.Since(start)
		s.Close()
	}
	mbs := func(n int64, d time.Duration) float64 { return float64(n) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbs(bytesSaved, cold), "mount-cold-MB/s")
	b.ReportMetric(mbs(bytesSaved, warm), "mount-warm-MB/s")
	b.ReportMetric(mbs(bytesSaved, local), "store-MB/s")
	b.ReportMetric(mbs(rpcPages*image.PageSize, rpc), "client-MB/s")
	b.ReportMetric(mbs(bytesSaved, cold)/mbs(bytesSaved, local), "mount-cold/store")
	b.ReportMetric(mbs(bytesSaved, warm)/mbs(bytesSaved, local), "mount-warm/store")
	b.ReportMetric(mbs(rpcPages*image.PageSize, rpc)/mbs(bytesSaved, local), "client/store")
}
