package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// netns is a network namespace made for one test (ip netns add) with its
// loopback up, so that the test's ports, connections and nftables rules
// stay off the host; it is deleted when the test ends.
type netns struct{ name string }

var netnsSeq atomic.Int64

func newNetns(t testing.TB) *netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a network namespace needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip (iproute2) to make a network namespace")
	}
	n := &netns{name: fmt.Sprintf("ckptfs-test-%d-%d", os.Getpid(), netnsSeq.Add(1))}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.name).Run() })
	if out, err := exec.Command("ip", "netns", "exec", n.name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v %s", err, out)
	}
	return n
}

// argv runs argv in the namespace (ip netns exec execs it: same pid).
func (n *netns) argv(argv ...string) []string {
	return append([]string{"ip", "netns", "exec", n.name}, argv...)
}

// command is exec.Command of argv in the namespace.
func (n *netns) command(argv ...string) *exec.Cmd {
	a := n.argv(argv...)
	return exec.Command(a[0], a[1:]...)
}

// ckptfs runs the ckptfs binary in the namespace.
func (n *netns) ckptfs(t testing.TB, args ...string) (string, string, error) {
	t.Helper()
	cmd := n.command(append([]string{filepath.Join(built(t), "ckptfs")}, args...)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}
