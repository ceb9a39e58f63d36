package testhold

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestHelperProcess passes hold points when run by TestHold.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("TESTHOLD_HELPER") == "" {
		t.Skip("helper of TestHold")
	}
	ch := make(chan struct{})
	SetAbort(ch)
	go func() { time.Sleep(50 * time.Millisecond); close(ch) }()
	At("c") // held until the abort
	for i := 0; i < 3; i++ {
		At("a")
		At("b")
	}
	os.Exit(0)
}

// TestHold runs the helper with points armed: each holds once, at the
// occurrence asked for, and a pause ends early on abort.
func TestHold(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=TestHelperProcess")
	cmd.Env = append(os.Environ(), "TESTHOLD_HELPER=1", Env+"=a:2,c", Env+"_MS=600000")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if time.Since(start) > time.Minute {
		t.Fatal("the abort did not end the pause")
	}
	if got := strings.Count(string(out), "CKPTFS_HOLD a\n"); got != 1 {
		t.Errorf("held at a %d times:\n%s", got, out)
	}
	if strings.Contains(string(out), "CKPTFS_HOLD b") {
		t.Errorf("held at b, not armed:\n%s", out)
	}
	if !strings.Contains(string(out), "CKPTFS_HOLD c\n") {
		t.Errorf("not held at c:\n%s", out)
	}
}
