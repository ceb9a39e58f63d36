package restorer

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

const busyProg = `package main

import (
	"fmt"
	"os"
	"time"
)

var sink uint64

func main() {
	for i := 0; i < 2; i++ {
		go func() {
			for {
				for j := 0; j < 1e6; j++ {
					sink += uint64(j)
				}
			}
		}()
	}
	for tick := 0; ; tick++ {
		fmt.Printf("gobusy %d tick %d ok\n", os.Getpid(), tick)
		time.Sleep(100 * time.Millisecond)
	}
}
`

// TestRestoreGoBusy restores a Go program whose goroutines spin: the
// runtime preempts them with SIGURG, which the kernel delivers on each
// thread's sigaltstack; without it restored, the runtime hangs.
func TestRestoreGoBusy(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.go"), []byte(busyProg), 0o644)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module gobusy\ngo 1.21\n"), 0o644)
	build := exec.Command("go", "build", "-o", "gobusy", ".")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v %s", err, out)
	}
	p := startArgv(t, []string{filepath.Join(dir, "gobusy")})
	ckpt := dumpKill(t, p)
	pid := restore(t, ckpt)
	p.waitTicks(t, 10)
	checkSame(t, ckpt, pid)
}
