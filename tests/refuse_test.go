package tests

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestDumpRefusesUnsupported: a TCP connection, an io_uring instance and a
// device make the dump refuse with a message naming pid, fd and kind; no
// checkpoint is written and the program runs on unharmed.
func TestDumpRefusesUnsupported(t *testing.T) {
	for _, c := range []struct{ kind, want string }{
		{"holder-tcp", "is a TCP socket"},
		{"holder-uring", "is [io_uring]"},
		{"holder-device", "is a device (/dev/fuse)"},
	} {
		t.Run(c.kind, func(t *testing.T) {
			p := startProgram(t, c.kind, 0)
			store := filepath.Join(t.TempDir(), "store")
			_, stderr, err := ckptfsErr(t, "dump", "-s", store, itoa(p.Pid))
			if err == nil {
				t.Fatalf("dump of %s succeeded", c.kind)
			}
			want := "process " + itoa(p.Pid) + " fd "
			if !strings.Contains(stderr, want) || !strings.Contains(stderr, c.want) {
				t.Fatalf("dump error %q does not say %q ... %q", stderr, want, c.want)
			}
			p.checkUnharmed(t, store)
		})
	}
}
