//go:build linux && amd64

package stub

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStubRuns starts the stub and checks it sleeps in pause with its
// segment at Base.
func TestStubRuns(t *testing.T) {
	cmd, cleanup, err := Command(nil)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	err = cmd.Start()
	cleanup()
	if err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	pid := cmd.Process.Pid
	var sys string
	for i := 0; i < 100; i++ {
		b, _ := os.ReadFile("/proc/" + itoa(pid) + "/syscall")
		sys = string(b)
		if strings.HasPrefix(sys, "34 ") {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.HasPrefix(sys, "34 ") {
		t.Fatalf("stub not in pause: %q", sys)
	}
	maps, err := os.ReadFile("/proc/" + itoa(pid) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(maps), "10000000-10001000 r-xp") {
		t.Fatalf("unexpected maps:\n%s", maps)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
