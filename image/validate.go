package image

import (
	"fmt"
	"strconv"
	"strings"
)

// Range checks of Load: a tree is untrusted input (a copy may have been
// edited by anyone), so every value that the restorer would act on is
// checked to be one a dump can produce.

// userEnd is the end of the x86-64 user address space with 4-level page
// tables (TASK_SIZE_MAX): no vma and no mm address lies above it, but the
// vsyscall page.
const userEnd = 0x7ffffffff000

// The [vsyscall] page, fixed by the kernel above the user half.
const (
	vsyscallStart = 0xffffffffff600000
	vsyscallEnd   = 0xffffffffff601000
)

// checkVMA checks the fields of one vma's info.
func checkVMA(v *VMA) error {
	switch {
	case v.Start%PageSize != 0 || v.End%PageSize != 0 || v.End <= v.Start:
		return fmt.Errorf("bad range %#x-%#x", v.Start, v.End)
	case v.Start == vsyscallStart && v.End == vsyscallEnd:
		if v.Kind != VMAVsyscall {
			return fmt.Errorf("range %#x-%#x is the vsyscall page, but kind is %q", v.Start, v.End, v.Kind)
		}
	case v.End > userEnd:
		return fmt.Errorf("range %#x-%#x is above the user address space (%#x)", v.Start, v.End, uint64(userEnd))
	}
	if !vmaKinds[v.Kind] {
		return fmt.Errorf("unknown vma kind %.40q", v.Kind)
	}
	if !validPerms(v.Perms) {
		return fmt.Errorf("bad perms %.20q (want [r-][w-][x-][ps])", v.Perms)
	}
	if v.Offset%PageSize != 0 || v.Offset > 1<<63-v.Len() {
		return fmt.Errorf("bad offset %#x", v.Offset)
	}
	if !validDev(v.Dev) {
		return fmt.Errorf("bad dev %.20q (want major:minor in hex)", v.Dev)
	}
	for _, f := range v.Flags {
		if len(f) != 2 {
			return fmt.Errorf("bad vmflag %.20q", f)
		}
	}
	return nil
}

func validPerms(p string) bool {
	return len(p) == 4 && (p[0] == 'r' || p[0] == '-') && (p[1] == 'w' || p[1] == '-') &&
		(p[2] == 'x' || p[2] == '-') && (p[3] == 'p' || p[3] == 's')
}

func validDev(d string) bool {
	maj, min, ok := strings.Cut(d, ":")
	_, err1 := strconv.ParseUint(maj, 16, 32)
	_, err2 := strconv.ParseUint(min, 16, 32)
	return ok && err1 == nil && err2 == nil && !strings.HasPrefix(maj, "+") && !strings.HasPrefix(min, "+")
}

// checkID checks a name the tree uses as a directory entry or reference
// (checkpoint id, object id, open file description): letters, digits,
// '.', '_', '-', not "." or "..".
func checkID(id string) error {
	if id == "" || id == "." || id == ".." || len(id) > 255 {
		return fmt.Errorf("bad id %.40q", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("bad id %.40q (letters, digits, '.', '_', '-' only)", id)
		}
	}
	return nil
}

// unreachableTask names a task that sortTasks left out: its parent is not
// in the checkpoint, or parents form a loop.
func unreachableTask(all, sorted []*Task) string {
	in := map[int]bool{}
	for _, t := range sorted {
		in[t.PID] = true
	}
	for _, t := range all {
		if !in[t.PID] {
			return fmt.Sprintf("task %d: its parent %d is not a task of the checkpoint reached from the root (missing, or parents form a loop)", t.PID, t.PPID)
		}
	}
	return "tasks listed twice"
}

// checkReferences checks what ties tasks together: every pid and tid is
// used once, a shared fd table belongs to another task of the checkpoint.
func checkReferences(dir string, c *Checkpoint) error {
	ids := map[int]int{} // tid -> pid of its task
	for _, t := range c.Tasks {
		own := []int{t.PID}
		if t.State != "Z" {
			own = own[:0]
			for _, th := range t.Threads {
				own = append(own, th.TID)
			}
		}
		for _, id := range own {
			if p, ok := ids[id]; ok {
				return fmt.Errorf("checkpoint %s: id %d is a thread of both task %d and task %d", dir, id, p, t.PID)
			}
			ids[id] = t.PID
		}
	}
	for _, t := range c.Tasks {
		if t.FilesOf == 0 {
			continue
		}
		o := c.Task(t.FilesOf)
		if o == nil || o == t || o.FilesOf != 0 {
			return fmt.Errorf("checkpoint %s: task %d: FilesOf %d is not another task with an fd table of its own", dir, t.PID, t.FilesOf)
		}
	}
	return nil
}
