package restorer

import (
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

func TestCheckRestorer(t *testing.T) {
	user := restorerCreds{UID: [3]int{1000, 1000, 1000}, GID: [3]int{100, 100, 100}, Groups: []int{100, 27}}
	task := func(mod func(*image.Creds)) *image.Checkpoint {
		c := image.Creds{UID: [4]int{1000, 1000, 1000, 1000}, GID: [4]int{100, 100, 100, 100}, Groups: []int{27}}
		if mod != nil {
			mod(&c)
		}
		return &image.Checkpoint{Tasks: []*image.Task{{PID: 7, Creds: c}}}
	}
	if err := checkRestorer(task(nil), user); err != nil {
		t.Errorf("own credentials refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*image.Creds)
		want string
	}{
		{"uid 0", func(c *image.Creds) { c.UID = [4]int{0, 0, 0, 0} }, "task 7: Uid (real) is 0"},
		{"saved uid", func(c *image.Creds) { c.UID[2] = 0 }, "task 7: Uid (saved) is 0"},
		{"fs gid", func(c *image.Creds) { c.GID[3] = 0 }, "task 7: Gid (fs) is 0"},
		{"group", func(c *image.Creds) { c.Groups = []int{27, 0} }, "task 7: Groups has 0"},
	} {
		err := checkRestorer(task(tc.mod), user)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// Capabilities beyond the restorer's (the sets come from the
	// capabilities model when there is one).
	defer func(f func(*image.Task) []capSet) { taskCapSets = f }(taskCapSets)
	taskCapSets = func(*image.Task) []capSet { return []capSet{{"CapEff", 1 << 21}} }
	if err := checkRestorer(task(nil), user); err == nil || !strings.Contains(err.Error(), "task 7: CapEff has capabilities 0x200000") {
		t.Errorf("CAP_SYS_ADMIN in CapEff: %v", err)
	}
	user.CapPrm = 1 << 21
	if err := checkRestorer(task(nil), user); err != nil {
		t.Errorf("a capability the restorer has: %v", err)
	}
	// Root restores anything.
	root := restorerCreds{}
	if err := checkRestorer(task(func(c *image.Creds) { c.UID = [4]int{5, 6, 7, 8} }), root); err != nil {
		t.Errorf("root: %v", err)
	}
}
