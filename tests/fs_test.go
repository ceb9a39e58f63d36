package tests

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
)

// fsCkptfs is the ckptfs binary the harness built.
func fsCkptfs(t *testing.T) string { return filepath.Join(built(t), "ckptfs") }

// TestFSMountDumpGDB: a mounted store receives a dump of a running C
// program; the checkpoint shows up in the mount within a second, and gdb
// reads the task's generated core file from the mount.
func TestFSMountDumpGDB(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	for _, tool := range []string{"gcc", "gdb"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skip("no " + tool)
		}
	}
	bin := fsCkptfs(t)
	dir := t.TempDir()
	exe := filepath.Join(dir, "prog")
	if out, err := exec.Command("gcc", "-g", "-O0", "-pthread", "-o", exe, "progs/backtrace.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	prog := exec.Command(exe)
	stdout, _ := prog.StdoutPipe()
	if err := prog.Start(); err != nil {
		t.Fatal(err)
	}
	pid := prog.Process.Pid
	t.Cleanup(func() { prog.Process.Kill(); prog.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || !strings.HasPrefix(line, "ready") {
		t.Fatalf("prog: %q %v", line, err)
	}
	time.Sleep(50 * time.Millisecond) // into pause()

	store := filepath.Join(dir, "store")
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(store, 0o700)
	os.Mkdir(mnt, 0o755)
	out, err := exec.Command(bin, "mount", "--daemon", store, mnt).CombinedOutput()
	if err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	var daemon int
	if _, err := fmt.Sscanf(string(out), "ckptfs: mounted (daemon pid %d)", &daemon); err != nil {
		t.Errorf("mount --daemon said %q", out)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("umount: %v", err)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
		// The daemon closes the store and exits on its own; the store
		// directory must outlive it.
		for deadline := time.Now().Add(10 * time.Second); daemon > 0 && processAlive(daemon); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("mount daemon %d still running 10s after umount", daemon)
				unix.Kill(daemon, unix.SIGKILL)
				break
			}
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "dump", "-s", store, "--name", "e2e", strconv.Itoa(pid)).CombinedOutput(); err != nil {
		t.Fatalf("dump: %v\n%s", err, out)
	}
	start := time.Now()
	ck := filepath.Join(mnt, "by-name", "e2e")
	for {
		if _, err := os.Stat(filepath.Join(ck, "info")); err == nil {
			t.Logf("visible %v after the dump returned", time.Since(start))
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("checkpoint not in the mount 1s after the dump")
		}
		time.Sleep(10 * time.Millisecond)
	}

	core := filepath.Join(ck, "tasks", strconv.Itoa(pid), "core")
	out, err = exec.Command("gdb", "-nx", "-batch", "-ex", "thread apply all bt", "-ex", "print global_counter",
		"-ex", "print heapbuf[4242]", exe, core).CombinedOutput()
	if err != nil {
		t.Fatalf("gdb: %v\n%s", err, out)
	}
	t.Logf("gdb:\n%s", out)
	if strings.Contains(string(out), "may not match") {
		t.Error("gdb: core file may not match the executable")
	}
	for _, w := range []string{"leaf (depth=8)", "middle (x=7)", "outer ()", "main ()", "spin", "= 43", "= 65 'A'"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("gdb output lacks %q", w)
		}
	}
	// Every anonymous vma's pages file reads as the process's memory (the
	// program sleeps, so its memory did not change since the dump), except
	// the threads' rseq areas, where the kernel keeps writing the cpu id.
	c, err := image.Load(ck)
	if err != nil {
		t.Fatalf("load the mounted checkpoint: %v", err)
	}
	var rseqs [][2]uint64
	for _, th := range c.Task(pid).Threads {
		if th.Rseq != nil {
			rseqs = append(rseqs, [2]uint64{th.Rseq.Addr, th.Rseq.Addr + uint64(th.Rseq.Len)})
		}
	}
	mem, err := os.Open("/proc/" + strconv.Itoa(pid) + "/mem")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	vmas, err := os.ReadDir(filepath.Join(ck, "tasks", strconv.Itoa(pid), "vmas"))
	if err != nil {
		t.Fatal(err)
	}
	compared := 0
	for _, e := range vmas {
		info, _ := os.ReadFile(filepath.Join(ck, "tasks", strconv.Itoa(pid), "vmas", e.Name(), "info"))
		if !strings.Contains(string(info), "kind: anon") && !strings.Contains(string(info), "kind: heap") &&
			!strings.Contains(string(info), "kind: stack") {
			continue
		}
		var start, end uint64
		if _, err := fmt.Sscanf(e.Name(), "%x-%x", &start, &end); err != nil {
			t.Fatalf("vma dir %q: %v", e.Name(), err)
		}
		got, err := os.ReadFile(filepath.Join(ck, "tasks", strconv.Itoa(pid), "vmas", e.Name(), "pages"))
		if err != nil {
			t.Fatal(err)
		}
		want := make([]byte, end-start)
		if _, err := mem.ReadAt(want, int64(start)); err != nil {
			t.Logf("read mem %s: %v", e.Name(), err)
			continue
		}
		compared++
		for _, r := range rseqs {
			if r[0] >= start && r[1] <= end {
				clear(got[r[0]-start : r[1]-start])
				clear(want[r[0]-start : r[1]-start])
			}
		}
		if !bytes.Equal(got, want) {
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("vma %s (%s): pages differ from memory first at +%#x", e.Name(), strings.Fields(string(info)), i)
					break
				}
			}
		}
	}
	if compared == 0 {
		t.Error("no anonymous vma compared")
	}
	// The maps file of the checkpoint matches the process's (it did not change).
	want, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	got, err := os.ReadFile(filepath.Join(ck, "tasks", strconv.Itoa(pid), "maps"))
	if err != nil || len(got) == 0 {
		t.Errorf("maps: %v", err)
	} else if string(got) != string(want) {
		t.Logf("maps differ:\n%s\nvs /proc:\n%s", got, want)
	}
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}
