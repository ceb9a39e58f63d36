package kcheck

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRun runs every probe on this machine: each answers, and a failed one
// says what it disables.
func TestRun(t *testing.T) {
	rs := Run()
	if len(rs) != len(Probes) {
		t.Fatalf("%d results for %d probes", len(rs), len(Probes))
	}
	for _, r := range rs {
		t.Logf("%-24s ok=%v %s", r.Name, r.OK, r.Detail)
		if r.Detail == "" {
			t.Errorf("%s: no detail", r.Name)
		}
		if !r.OK && r.Disables == "" {
			t.Errorf("%s: missing, but what it disables is not said", r.Name)
		}
	}
}

// TestProbesAgreeWithKernel checks the probes against what this machine
// is known to have: clone3 and pidfd_getfd since 5.6, userfaultfd, FUSE.
func TestProbesAgreeWithKernel(t *testing.T) {
	if !kernelAtLeast(5, 6) {
		t.Skip("kernel " + KernelRelease() + " is older than 5.6")
	}
	if ok, d := probeClone3(); !ok {
		t.Errorf("clone3: %s", d)
	}
	if ok, d := probePidfdGetfd(); !ok {
		t.Errorf("pidfd_getfd: %s", d)
	}
	if _, err := os.Stat("/dev/fuse"); err == nil && os.Geteuid() == 0 {
		if ok, d := probeFUSE(); !ok {
			t.Errorf("FUSE: %s", d)
		}
	}
	if kernelAtLeast(6, 7) {
		if ok, d := probePagemapScan(); !ok {
			t.Errorf("PAGEMAP_SCAN on %s: %s", KernelRelease(), d)
		}
	}
	if os.Geteuid() == 0 && hasCap(unix.CAP_NET_ADMIN) {
		if ok, d := probeTCPRepair(); !ok {
			t.Errorf("TCP repair as root: %s", d)
		}
	}
}

func TestKernelAtLeast(t *testing.T) {
	if !kernelAtLeast(2, 6) {
		t.Errorf("kernel %s not >= 2.6", KernelRelease())
	}
	if kernelAtLeast(999, 0) {
		t.Errorf("kernel %s >= 999.0", KernelRelease())
	}
}
