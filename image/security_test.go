package image

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sampleSecurity is a root process that dropped most of its capabilities,
// under two seccomp filters, and a thread with one more filter.
func sampleSecurity() (*Security, *Security) {
	allow := []byte{0x06, 0, 0, 0, 0, 0, 0xff, 0x7f} // ret SECCOMP_RET_ALLOW
	deny := []byte{0x20, 0, 0, 0, 0, 0, 0, 0, 0x06, 0, 0, 0, 1, 0, 5, 0}
	main := &Security{Personality: 0x40000, CapInh: 0x400, CapPrm: 0x3400, CapEff: 0x1000, CapBnd: 0x3fff,
		CapAmb: 0x400, SecureBits: 0x2f, NoNewPrivs: true, PDeathSig: 15, Dumpable: 1, SeccompMode: 2,
		Filters: []SeccompFilter{{Prog: allow}, {Flags: SeccompFlagLog, Prog: deny}}}
	th := *main
	th.Filters = append(append([]SeccompFilter(nil), main.Filters...), SeccompFilter{Prog: allow})
	th.PDeathSig = 0
	return main, &th
}

func securityTree(t *testing.T) string {
	t.Helper()
	src := memSource{}
	c := sampleCheckpoint(src)
	c.Tasks[0].Security, c.Tasks[0].Threads[1].Security = sampleSecurity()
	dir := t.TempDir()
	if err := WriteTree(dir, Render(c, src)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestSecurityRoundTrip(t *testing.T) {
	dir := securityTree(t)
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	main, th := sampleSecurity()
	task := got.Task(100)
	if !reflect.DeepEqual(task.Security, main) {
		t.Errorf("task security:\n got %+v\nwant %+v", task.Security, main)
	}
	if task.Threads[0].Security != nil {
		t.Errorf("main thread has a security of its own: %+v", task.Threads[0].Security)
	}
	if !reflect.DeepEqual(task.Threads[1].Security, th) {
		t.Errorf("thread security:\n got %+v\nwant %+v", task.Threads[1].Security, th)
	}
	if !task.ThreadSecurity(1).Equal(th) || !task.ThreadSecurity(0).Equal(main) {
		t.Error("ThreadSecurity does not give each thread its state")
	}
	b, err := os.ReadFile(filepath.Join(dir, "tasks/100/security"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"cap_effective: 0x1000\n", "no_new_privs: 1\n", "seccomp: 2\n",
		"seccomp_filters: 2\n", "seccomp_filter_flags: 0x0 0x2\n", "personality: 0x40000\n"} {
		if !strings.Contains(string(b), line) {
			t.Errorf("security file lacks %q:\n%s", line, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "tasks/100/threads/101/seccomp/2")); err != nil {
		t.Errorf("thread's third filter: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tasks/100/threads/100/security")); err == nil {
		t.Error("the main thread got a security file like its task's")
	}
	// A tree from before security was recorded loads with none.
	os.Remove(filepath.Join(dir, "tasks/100/security"))
	os.RemoveAll(filepath.Join(dir, "tasks/100/seccomp"))
	os.Remove(filepath.Join(dir, "tasks/100/threads/101/security"))
	os.RemoveAll(filepath.Join(dir, "tasks/100/threads/101/seccomp"))
	if got, err = Load(dir); err != nil || got.Task(100).Security != nil {
		t.Fatalf("tree without security: %v %+v", err, got.Task(100).Security)
	}
}

// TestSecurityRefusesEdits: values no kernel gives are errors naming the file.
func TestSecurityRefusesEdits(t *testing.T) {
	for _, c := range []struct{ name, from, to, want string }{
		{"effective beyond permitted", "cap_effective: 0x1000", "cap_effective: 0x10000", "not a subset of cap_permitted"},
		{"ambient beyond inheritable", "cap_ambient: 0x400", "cap_ambient: 0x1000", "cap_ambient"},
		{"strict mode", "seccomp: 2", "seccomp: 1", "seccomp mode 1"},
		{"filter count", "seccomp_filters: 2", "seccomp_filters: 3", "3 filters"},
		{"unknown securebits", "securebits: 0x2f", "securebits: 0x10000", "unknown bits"},
		{"bad no_new_privs", "no_new_privs: 1", "no_new_privs: 7", "not 0 or 1"},
		{"bad signal", "pdeathsig: 15", "pdeathsig: 99", "not a signal"},
		{"garbled", "cap_bounding: 0x3fff", "cap_bounding: lots", "bad number"},
		{"filter flags", "seccomp_filter_flags: 0x0 0x2", "seccomp_filter_flags: 0x0 0x8", "flags 0x8"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := securityTree(t)
			p := filepath.Join(dir, "tasks/100/security")
			b, _ := os.ReadFile(p)
			if !strings.Contains(string(b), c.from) {
				t.Fatalf("%s lacks %q", p, c.from)
			}
			os.WriteFile(p, []byte(strings.Replace(string(b), c.from, c.to, 1)), 0o644)
			_, err := Load(dir)
			if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load error %v, want one naming %s and saying %q", err, p, c.want)
			}
		})
	}
	dir := securityTree(t)
	odd := filepath.Join(dir, "tasks/100/seccomp/1")
	os.WriteFile(odd, []byte{1, 2, 3}, 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "3 bytes") {
		t.Fatalf("a filter of 3 bytes: %v", err)
	}
	os.Remove(odd)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "seccomp/1") {
		t.Fatalf("a missing filter: %v", err)
	}
}
