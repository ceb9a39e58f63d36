package restorer

import (
	"reflect"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/image"
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
	if s := unescapeMount(`a\134b\011c\0`); s != "a\\b\tc\\0" {
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
