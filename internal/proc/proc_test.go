package proc

import (
	"os"
	"testing"
)

func TestParseMaps(t *testing.T) {
	in := "00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus daemon\n" +
		"7ffd6a9f3000-7ffd6aa14000 rw-p 00000000 00:00 0                          [stack]\n" +
		"7f0000000000-7f0000001000 ---p 00000000 00:00 0 \n"
	ms, err := ParseMaps([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("got %d mappings", len(ms))
	}
	if ms[0].Name != "/usr/bin/dbus daemon" || ms[0].Inode != 173521 || ms[0].Perms != "r-xp" || ms[0].End != 0x452000 {
		t.Errorf("line 0: %+v", ms[0])
	}
	if ms[1].Name != "[stack]" || ms[1].Start != 0x7ffd6a9f3000 {
		t.Errorf("line 1: %+v", ms[1])
	}
	if ms[2].Name != "" {
		t.Errorf("line 2 name %q", ms[2].Name)
	}
	if _, err := ParseMaps([]byte("garbage\n")); err == nil {
		t.Error("garbage accepted")
	}
}

func TestSelf(t *testing.T) {
	pid := os.Getpid()
	// The Go runtime may map memory between our reads of maps and smaps
	// (the dumper reads a frozen process): retry until they agree.
	var ms []Mapping
	for try := 0; ; try++ {
		var err error
		if ms, err = Maps(pid); err != nil {
			t.Fatal(err)
		}
		flagged := 0
		for _, m := range ms {
			if len(m.Flags) > 0 {
				flagged++
			}
		}
		if flagged == len(ms) {
			break
		}
		if try == 20 {
			t.Fatalf("%d of %d mappings have VmFlags", flagged, len(ms))
		}
	}
	b, err := Read(pid, "stat")
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseStat(b)
	if err != nil {
		t.Fatal(err)
	}
	if st.PPID != os.Getppid() || st.StartStack == 0 || st.ArgStart == 0 {
		t.Errorf("stat: %+v", st)
	}
	tids, err := Tasks(pid)
	if err != nil || tids[0] != pid {
		t.Errorf("tasks %v %v", tids, err)
	}
	pm, err := OpenPagemap(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	for _, m := range ms {
		if m.Name == "[stack]" {
			e, err := pm.Entries(m.Start, m.End, nil)
			if err != nil {
				t.Fatal(err)
			}
			if e[len(e)-1]&PMPresent == 0 {
				t.Error("top stack page not present")
			}
		}
	}
}
