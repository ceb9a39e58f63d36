package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDumpRefusesUnsupported: a TCP connection, an io_uring instance, a
// device and a pty master make the dump refuse with a message naming pid, fd and kind; no
// checkpoint is written and the program runs on unharmed.
func TestDumpRefusesUnsupported(t *testing.T) {
	for _, c := range []struct{ kind, want string }{
		{"holder-tcp", "is a TCP socket"},
		{"holder-uring", "is [io_uring]"},
		{"holder-device", "is a device (/dev/fuse)"},
		{"holder-pty", "is a pty master"},
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
			if ok, state := running(p.Pid); !ok {
				t.Fatalf("program state %s after refused dump", state)
			}
			status, _ := os.ReadFile("/proc/" + itoa(p.Pid) + "/status")
			if !strings.Contains(string(status), "TracerPid:\t0\n") {
				t.Fatal("program traced after refused dump")
			}
			noCheckpoint(t, store)
			p.waitTicks(t, 2)
			p.checkHealthy(t)
		})
	}
}
