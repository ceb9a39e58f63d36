package restorer

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ckptfs/ckptfs/internal/proc"
)

// What the restorer reads from outside about a pid namespace it creates
// (pidns.go): the outer ids of new tasks, the namespace's mounts.

// detachCheckpointMounts detaches the namespace's copies of ckptfs mounts
// (fuse.ckptfs): the tree has no use for them (its files are opened by the
// restorer, outside), and a copy would keep a mount's daemon running after
// `umount` outside, as long as the restored tree lives.
func (p *target) detachCheckpointMounts() error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", p.pid))
	if err != nil {
		return err
	}
	for _, dir := range ckptfsMounts(b) {
		path, err := p.cstr(1024, dir)
		if err != nil {
			return err
		}
		// A mount under one detached before is gone with it.
		if _, err := p.sys(p.pid, unix.SYS_UMOUNT2, path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("detach the copy of ckptfs mount %s: %w", dir, err)
		}
	}
	return nil
}

// ckptfsMounts lists the mount points of fuse.ckptfs mounts in a
// mountinfo file (octal escapes undone).
func ckptfsMounts(mountinfo []byte) []string {
	var dirs []string
	for _, line := range strings.Split(string(mountinfo), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, v := range f {
			if v == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(f) || f[sep+1] != "fuse.ckptfs" {
			continue
		}
		dirs = append(dirs, proc.UnescapeMountinfo(f[4]))
	}
	return dirs
}

// outerID returns the id, in the restorer's namespace, of the task a
// clone3 in thread tid of p just created with id inner in p's namespace:
// a thread of p, or a child of tid, whose NSpid ends with inner.
func (p *target) outerID(tid int, thread bool, inner int) (int, error) {
	if !p.inNS {
		return inner, nil
	}
	var cands []string
	if thread {
		tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", p.pid))
		if err != nil {
			return 0, err
		}
		for _, e := range tids {
			cands = append(cands, e.Name())
		}
	} else {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p.pid, tid))
		if err != nil {
			return 0, err
		}
		cands = strings.Fields(string(b))
	}
	for _, c := range cands {
		path := "/proc/" + c + "/status"
		if thread {
			path = fmt.Sprintf("/proc/%d/task/%s/status", p.pid, c)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		ids := strings.Fields(proc.KeyValues(b)["NSpid"])
		if len(ids) > 1 && ids[len(ids)-1] == strconv.Itoa(inner) {
			return strconv.Atoi(c)
		}
	}
	return 0, fmt.Errorf("new task %d of %d not found from outside its pid namespace", inner, p.pid)
}
