package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// Mapping is one line of /proc/<pid>/maps, with VmFlags from smaps.
type Mapping struct {
	Start, End uint64
	Perms      string
	Offset     uint64
	Dev        string
	Inode      uint64
	Name       string
	Flags      []string
}

// ParseMaps parses /proc/<pid>/maps.
func ParseMaps(b []byte) ([]Mapping, error) {
	var ms []Mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m, err := parseMapsLine(sc.Text())
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, sc.Err()
}

func parseMapsLine(line string) (Mapping, error) {
	var m Mapping
	// start-end perms offset dev inode [name]; name may contain spaces.
	f := strings.SplitN(line, " ", 6)
	if len(f) < 5 {
		return m, fmt.Errorf("malformed maps line %q", line)
	}
	rng := strings.SplitN(f[0], "-", 2)
	if len(rng) != 2 {
		return m, fmt.Errorf("malformed maps range %q", line)
	}
	var err error
	if m.Start, err = strconv.ParseUint(rng[0], 16, 64); err != nil {
		return m, fmt.Errorf("maps line %q: %w", line, err)
	}
	if m.End, err = strconv.ParseUint(rng[1], 16, 64); err != nil {
		return m, fmt.Errorf("maps line %q: %w", line, err)
	}
	m.Perms = f[1]
	if m.Offset, err = strconv.ParseUint(f[2], 16, 64); err != nil {
		return m, fmt.Errorf("maps line %q: %w", line, err)
	}
	m.Dev = f[3]
	if m.Inode, err = strconv.ParseUint(f[4], 10, 64); err != nil {
		return m, fmt.Errorf("maps line %q: %w", line, err)
	}
	if len(f) == 6 {
		m.Name = strings.TrimLeft(f[5], " ")
	}
	return m, nil
}

// ParseSmapsFlags returns the VmFlags of each mapping in /proc/<pid>/smaps,
// keyed by start address.
func ParseSmapsFlags(b []byte) map[uint64][]string {
	flags := map[uint64][]string{}
	var cur uint64
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "VmFlags:"); ok {
			flags[cur] = strings.Fields(rest)
			continue
		}
		if i := strings.IndexByte(line, '-'); i > 0 && !strings.Contains(line[:i], ":") {
			if v, err := strconv.ParseUint(line[:i], 16, 64); err == nil {
				cur = v
			}
		}
	}
	return flags
}

// Maps reads /proc/<pid>/maps and the VmFlags from smaps.
func Maps(pid int) ([]Mapping, error) {
	b, err := Read(pid, "maps")
	if err != nil {
		return nil, err
	}
	ms, err := ParseMaps(b)
	if err != nil {
		return nil, fmt.Errorf("parse maps of %d: %w", pid, err)
	}
	sb, err := Read(pid, "smaps")
	if err != nil {
		return nil, err
	}
	fl := ParseSmapsFlags(sb)
	for i := range ms {
		ms[i].Flags = fl[ms[i].Start]
	}
	return ms, nil
}
