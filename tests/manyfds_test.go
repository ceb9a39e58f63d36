package tests

import (
	"testing"
)

// TestRestoreManyFDs dumps (--kill) and restores a program holding 3,000
// fds: opens of one file each at its own offset, dups sharing an open file
// description with them, pipes with a byte in flight. The restored
// program checks every offset, that moving a dup moves the fd it shares
// its description with and not the others, and every pipe's byte.
func TestRestoreManyFDs(t *testing.T) {
	argv := []string{buildProg(t, "manyfds"), "3000", "/etc/passwd"}
	p := startArgv(t, "manyfds", argv)
	dumpKillRestore(t, p.Pid, nil)
	p.Cmd = nil // killed by the dump; the restored one is killed by restoreFrom
	p.waitTicks(t, 2)
	p.checkHealthy(t)
}
