package dumper

import (
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

func TestUnrestorableFilter(t *testing.T) {
	for _, c := range []struct {
		name string
		prog []byte
		want string
	}{
		{"allow", []byte{0x06, 0, 0, 0, 0, 0, 0xff, 0x7f}, ""},
		{"errno", []byte{0x20, 0, 0, 0, 0, 0, 0, 0, 0x06, 0, 0, 0, 1, 0, 5, 0}, ""},
		{"user notification", []byte{0x06, 0, 0, 0, 0, 0, 0xc0, 0x7f}, "user notifications"},
		{"computed", []byte{0x16, 0, 0, 0, 0, 0, 0, 0}, "computed action"},
	} {
		if got := unrestorableFilter(c.prog); c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// TestShareSecurity: the main thread's state becomes the task's, threads
// keep only a state of their own, and all get the process' dumpable.
func TestShareSecurity(t *testing.T) {
	main := &image.Security{CapPrm: 1, Dumpable: 1}
	same := &image.Security{CapPrm: 1}
	other := &image.Security{CapPrm: 3}
	task := &image.Task{Threads: []*image.Thread{{TID: 1, Security: main}, {TID: 2, Security: same}, {TID: 3, Security: other}}}
	shareSecurity(task)
	if task.Security != main || task.Threads[1].Security != nil || task.Threads[2].Security != other || other.Dumpable != 1 {
		t.Errorf("task %+v, threads %+v %+v %+v", task.Security, task.Threads[0].Security, task.Threads[1].Security, task.Threads[2].Security)
	}
}
