package restorer

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/image"
	"github.com/ckptfs/ckptfs/internal/proc"
)

func TestCkptfsMounts(t *testing.T) {
	info := `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
98 22 0:50 / /tmp/ckptfs\040mnt rw,nosuid - fuse.ckptfs ckptfs ro,user_id=0
99 22 0:51 / /tmp/other rw - fuse.sshfs host: rw
100 98 0:52 / /tmp/x rw shared:7 master:3 - fuse.ckptfs ckptfs ro
`
	got := ckptfsMounts([]byte(info))
	want := []string{"/tmp/ckptfs mnt", "/tmp/x"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ckptfsMounts = %q, want %q", got, want)
	}
	if s := proc.UnescapeMountinfo(`a\134b\011c\0`); s != "a\\b\tc\\0" {
		t.Fatalf("unescapeMount = %q", s)
	}
}

func task(pid int, nspid ...int) *image.Task {
	t := &image.Task{PID: pid, PPID: 1, NSpid: nspid}
	th := &image.Thread{TID: pid}
	if len(nspid) > 1 {
		th.NSpid = nspid
	}
	t.Threads = []*image.Thread{th}
	return t
}

// TestCheckPidNS: the shapes a restore into a pid namespace refuses.
func TestCheckPidNS(t *testing.T) {
	for _, c := range []struct {
		name  string
		tasks []*image.Task
		err   string
	}{
		{"flat", []*image.Task{task(100), task(101)}, ""},
		{"ns init root", []*image.Task{task(100, 100, 1), task(101, 101, 2)}, ""},
		{"ns child root", []*image.Task{task(100, 100, 7), task(101, 101, 8)}, ""},
		{"nested", []*image.Task{task(100, 100, 5, 1)}, "only one level"},
		{"spans", []*image.Task{task(100), task(101, 101, 1)}, "spans pid namespaces"},
		{"collide", []*image.Task{task(100, 100, 3), task(101, 101, 3)}, "both have pid 3"},
		{"init not root", []*image.Task{task(100, 100, 2), task(101, 101, 1)}, "is not the root"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ck := &image.Checkpoint{RootPID: c.tasks[0].PID, Tasks: c.tasks}
			err := checkPidNS(ck)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("got %v, want an error with %q", err, c.err)
			}
		})
	}
}

// TestRestorePidNSFailure: a restore into a pid namespace that fails at
// any point leaves no process behind (the namespace's init is killed and
// reaped, and every task with it); one that succeeds gives the root its
// recorded pid inside, a new one outside, and the init as its parent.
func TestRestorePidNSFailure(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root: pid namespaces")
	}
	p := start(t, "pthreads", 1)
	p.waitTicks(t, 1)
	dir := dumpKill(t, p)
	before := children()
	for _, point := range []string{"created", "threads", "finished"} {
		t.Run(point, func(t *testing.T) {
			failAt = point
			defer func() { failAt = "" }()
			_, err := Restore(dir, Options{PidNS: true})
			wantErr(t, err, "failpoint "+point)
			if got := children(); len(got) != len(before) {
				t.Fatalf("children after a failed restore: %v, before %v", got, before)
			}
		})
	}
	pid, err := Restore(dir, Options{PidNS: true})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	kv := proc.KeyValues(st)
	initPid, _ := strconv.Atoi(kv["PPid"])
	defer func() {
		unix.Kill(initPid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(initPid, &ws, 0, nil) // our child (CLONE_PARENT)
	}()
	if want := fmt.Sprintf("%d\t%d", pid, p.pid); kv["NSpid"] != want {
		t.Fatalf("NSpid %q, want %q", kv["NSpid"], want)
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", initPid)); string(comm) != "ckptfs-init\n" {
		t.Fatalf("parent %d is %q", initPid, comm)
	}
	p.waitTicks(t, 2)
}
