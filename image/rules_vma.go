package image

import (
	"fmt"
	"strings"
)

// VMARefusal refuses the mappings of task t that no restore could give
// back, the rule the restorer applies before creating a process
// (restorer/check.go) and the dumper before it seizes anything
// (dumper/refuse_paths.go): a SysV attach is recreated with one shmat of
// the whole segment at the attach's start, then cut to the pieces the
// program kept, so an attach whose first page the program unmapped (its
// first vma maps the segment from an offset) cannot be.
func VMARefusal(t *Task) error {
	for i, v := range t.VMAs {
		if !(v.Kind == VMAShmem && strings.HasPrefix(v.Name, "/SYSV")) || v.Offset == 0 {
			continue
		}
		if i > 0 {
			w := t.VMAs[i-1]
			if w.Kind == VMAShmem && strings.HasPrefix(w.Name, "/SYSV") && w.Inode == v.Inode && w.End == v.Start && w.Offset+w.Len() == v.Offset {
				continue // the rest of the attach before it
			}
		}
		return fmt.Errorf("task %d: vma %s attaches SysV segment %d from offset %#x: cannot restore a partly unmapped attach", t.PID, v.DirName(), v.Inode, v.Offset)
	}
	return nil
}
