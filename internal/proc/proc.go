// Package proc reads the /proc files the dumper needs: maps with VmFlags,
// status, stat, fdinfo, limits, pagemap, task and children lists.
package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Path returns /proc/<pid>/<name>.
func Path(pid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/" + name
}

// Read returns the content of /proc/<pid>/<name>.
func Read(pid int, name string) ([]byte, error) {
	b, err := os.ReadFile(Path(pid, name))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", Path(pid, name), err)
	}
	return b, nil
}

// Readlink returns the target of /proc/<pid>/<name>.
func Readlink(pid int, name string) (string, error) {
	s, err := os.Readlink(Path(pid, name))
	if err != nil {
		return "", fmt.Errorf("readlink %s: %w", Path(pid, name), err)
	}
	return s, nil
}

// Tasks lists the thread ids of pid, ascending, the thread group leader first.
func Tasks(pid int) ([]int, error) {
	ents, err := os.ReadDir(Path(pid, "task"))
	if err != nil {
		return nil, fmt.Errorf("list threads of %d: %w", pid, err)
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	sort.Slice(tids, func(i, j int) bool {
		if (tids[i] == pid) != (tids[j] == pid) {
			return tids[i] == pid
		}
		return tids[i] < tids[j]
	})
	return tids, nil
}

// Children lists the child pids of pid over all its threads.
func Children(pid int) ([]int, error) {
	tids, err := Tasks(pid)
	if err != nil {
		return nil, err
	}
	var kids []int
	for _, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, tid))
		if err != nil {
			continue // thread exited meanwhile
		}
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil {
				kids = append(kids, k)
			}
		}
	}
	sort.Ints(kids)
	return kids, nil
}

// Stat holds the fields of /proc/<pid>/stat the dumper uses.
type Stat struct {
	Comm             string
	State            string
	PPID, PGID, SID  int
	TTYNr            uint64 // field 7: controlling terminal, 0 if none
	TPGID            int    // field 8: the terminal's foreground process group, -1 if none
	StartCode        uint64 // field 26
	EndCode          uint64
	StartStack       uint64
	StartData        uint64 // field 45
	EndData          uint64
	StartBrk         uint64
	ArgStart, ArgEnd uint64
	EnvStart, EnvEnd uint64
}

// ParseStat parses /proc/<pid>/stat.
func ParseStat(b []byte) (Stat, error) {
	var s Stat
	lp := bytes.IndexByte(b, '(')
	rp := bytes.LastIndexByte(b, ')')
	if lp < 0 || rp < lp {
		return s, fmt.Errorf("malformed stat %q", b)
	}
	s.Comm = string(b[lp+1 : rp])
	f := strings.Fields(string(b[rp+1:]))
	// f[0] is field 3 (state).
	field := func(n int) uint64 {
		if n-3 >= len(f) {
			return 0
		}
		v, _ := strconv.ParseUint(f[n-3], 10, 64)
		return v
	}
	if len(f) < 50 {
		return s, fmt.Errorf("stat has %d fields, want >= 52", len(f)+2)
	}
	s.State = f[0]
	s.PPID = int(field(4))
	s.PGID = int(field(5))
	s.SID = int(field(6))
	s.TTYNr = field(7)
	s.TPGID, _ = strconv.Atoi(f[8-3])
	s.StartCode = field(26)
	s.EndCode = field(27)
	s.StartStack = field(28)
	s.StartData = field(45)
	s.EndData = field(46)
	s.StartBrk = field(47)
	s.ArgStart = field(48)
	s.ArgEnd = field(49)
	s.EnvStart = field(50)
	s.EnvEnd = field(51)
	return s, nil
}

// KeyValues parses "Key:\tvalue" lines (status, fdinfo).
func KeyValues(b []byte) map[string]string {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// IDs parses a status line such as "Uid: 0 0 0 0" into ints.
func IDs(s string) []int {
	var ids []int
	for _, f := range strings.Fields(s) {
		if v, err := strconv.Atoi(f); err == nil {
			ids = append(ids, v)
		}
	}
	return ids
}

// FDs lists the open fd numbers of pid, ascending.
func FDs(pid int) ([]int, error) {
	ents, err := os.ReadDir(Path(pid, "fd"))
	if err != nil {
		return nil, fmt.Errorf("list fds of %d: %w", pid, err)
	}
	fds := make([]int, 0, len(ents))
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			fds = append(fds, n)
		}
	}
	sort.Ints(fds)
	return fds, nil
}

// FDPath returns /proc/<pid>/fd/<n>.
func FDPath(pid, fd int) string { return filepath.Join(Path(pid, "fd"), strconv.Itoa(fd)) }

// UnixSocketInodes returns the inodes of the unix sockets in pid's network
// namespace (/proc/<pid>/net/unix).
func UnixSocketInodes(pid int) (map[uint64]bool, error) {
	b, err := Read(pid, "net/unix")
	if err != nil {
		return nil, err
	}
	inodes := map[uint64]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 7 {
			continue
		}
		if ino, err := strconv.ParseUint(f[6], 10, 64); err == nil {
			inodes[ino] = true
		}
	}
	return inodes, nil
}
