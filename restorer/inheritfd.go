package restorer

import (
	"fmt"
	"regexp"
	"strconv"

	"github.com/ckptfs/ckptfs/image"
)

// InheritFD is one restore --inherit-fd fd[N]:KEY (after CRIU's): every fd
// of the tree on the object KEY names is installed from the restorer's own
// fd N instead of being made again, so a pipe or socket whose other end
// was outside the checkpoint is connected to one the user gives, and a
// regular file restore may not open is one the user opened. KEY is the
// object as the tree shows it: an fd's path in tasks/PID/fdinfo/N
// ("pipe:[1234]", "socket:[5678]", a named FIFO's or a regular file's
// path) or its object ("pipe-1234", "unix-5678").
type InheritFD struct {
	FD  int
	Key string
}

var inheritFDSyntax = regexp.MustCompile(`^fd\[([0-9]{1,9})\]:(.+)$`)

// ParseInheritFD reads "fd[N]:KEY".
func ParseInheritFD(s string) (InheritFD, error) {
	m := inheritFDSyntax.FindStringSubmatch(s)
	if m == nil {
		return InheritFD{}, fmt.Errorf("--inherit-fd %q: want fd[N]:KEY, KEY an fd's path as the tree shows it (pipe:[1234], socket:[5678]) or its object (pipe-1234)", s)
	}
	n, _ := strconv.Atoi(m[1])
	return InheritFD{FD: n, Key: m[2]}, nil
}

// handedFDs maps a KEY to the restorer fd handed in for it.
type handedFDs map[string]int

// of returns the restorer fd handed in for fd f, if one was.
func (h handedFDs) of(f *image.FD) (int, bool) {
	if len(h) == 0 || (f.Kind != image.FDPipe && f.Kind != image.FDSocket && (f.Kind != image.FDFile || f.Object != "")) {
		return 0, false
	}
	if n, ok := h[f.Path]; ok {
		return n, true
	}
	if f.Object != "" {
		if n, ok := h[f.Object]; ok {
			return n, true
		}
	}
	return 0, false
}

// handIn checks every --inherit-fd against the restorer's fds (own) and
// the tree: the fd must be open, and KEY must name a pipe or socket of the
// tree, so a mistyped key is an error rather than an fd silently made again.
func handIn(c *image.Checkpoint, own map[int]string, list []InheritFD) (handedFDs, error) {
	h := handedFDs{}
	for _, in := range list {
		if _, ok := own[in.FD]; !ok {
			return nil, fmt.Errorf("--inherit-fd fd[%d]:%s: the restorer has no fd %d open", in.FD, in.Key, in.FD)
		}
		if _, dup := h[in.Key]; dup {
			return nil, fmt.Errorf("--inherit-fd: %s is handed in twice", in.Key)
		}
		h[in.Key] = in.FD
	}
	for key, n := range h {
		found := false
		for _, t := range c.Tasks {
			for _, f := range t.FDs {
				if m, ok := (handedFDs{key: n}).of(f); ok && m == n {
					found = true
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("--inherit-fd fd[%d]:%s: no pipe, socket or regular file fd of the tree is %s (KEY is an fd's path in tasks/PID/fdinfo/N, e.g. pipe:[1234] or /var/log/x.log, or its object, e.g. pipe-1234)", n, key, key)
		}
	}
	return h, nil
}

// handIn sets the fds handed in with --inherit-fd.
func (fs *files) handIn(h handedFDs) *files {
	fs.handed = h
	return fs
}
