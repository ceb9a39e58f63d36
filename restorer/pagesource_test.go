package restorer

import (
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

func TestStoreFromMountinfo(t *testing.T) {
	mi := []byte(`22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
42 27 0:39 / /tmp/mnt ro,nosuid,nodev,relatime - fuse.ckptfs ckptfs:/tmp/my\040store ro,user_id=0,group_id=0
43 27 0:40 / /tmp/other ro,nosuid,nodev,relatime - fuse.ckptfs ckptfs ro,user_id=0,group_id=0
44 27 0:41 / /tmp/sshfs rw,nosuid,nodev,relatime - fuse.sshfs ckptfs:/tmp/x rw,user_id=0,group_id=0
45 27 0:42 / /tmp/rel ro,relatime - fuse.ckptfs ckptfs:store/../x ro
`)
	for _, c := range []struct {
		minor uint32
		store string
	}{{39, "/tmp/my store"}, {40, ""}, {41, ""}, {42, ""}, {99, ""}} {
		got, ok := storeFromMountinfo(mi, 0, c.minor)
		if got != c.store || ok != (c.store != "") {
			t.Errorf("0:%d: %q %v, want %q", c.minor, got, ok, c.store)
		}
	}
}

func TestRefRanges(t *testing.T) {
	refs := []image.PageRef{{Index: 0}, {Index: 1}, {Index: 3}, {Index: 4}, {Index: 5}, {Index: 9}}
	got := refRanges(refs)
	want := [][2]int64{{0, 2 * image.PageSize}, {3 * image.PageSize, 6 * image.PageSize}, {9 * image.PageSize, 10 * image.PageSize}}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%v, want %v", got, want)
		}
	}
}
