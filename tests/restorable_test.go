package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// Every checkpoint a successful dump of the suite makes is checked at
// once against the rules restore refuses by (ckptfs restorable, the tree
// half of restore's preflight): a dump that succeeds must be one a restore
// does not refuse. TestMain reports the count and fails the run if any was.

var restorable struct {
	sync.Mutex
	checked int
	refused []string
}

// checkRestorable runs ckptfs restorable on the checkpoint a dump with
// args printed (stdout) into its store.
func checkRestorable(t testing.TB, args []string, stdout string) {
	t.Helper()
	if len(args) == 0 || args[0] != "dump" {
		return
	}
	store, id := dumpStore(args), dumpedID(stdout)
	if store == "" || id == "" {
		return
	}
	out, errOut, err := ckptfsRun(t, "restorable", "-s", store, id)
	restorable.Lock()
	defer restorable.Unlock()
	restorable.checked++
	if err != nil {
		msg := fmt.Sprintf("%s: dump %s made checkpoint %s that restore would refuse: %v\n%s%s", t.Name(), strings.Join(args[1:], " "), id, err, out, errOut)
		restorable.refused = append(restorable.refused, msg)
		t.Error(msg)
	}
}

// dumpStore returns the store of dump args (-s, --store, or $CKPTFS_STORE).
func dumpStore(args []string) string {
	for i, a := range args {
		switch {
		case (a == "-s" || a == "--store") && i+1 < len(args):
			return args[i+1]
		case strings.HasPrefix(a, "--store="):
			return strings.TrimPrefix(a, "--store=")
		case strings.HasPrefix(a, "-s") && len(a) > 2:
			return a[2:]
		}
	}
	return os.Getenv("CKPTFS_STORE")
}

// dumpedID returns the checkpoint id a dump printed last (plain or --json).
func dumpedID(stdout string) string {
	if strings.TrimSpace(stdout) == "" {
		return ""
	}
	l := lastLine(stdout)
	if strings.HasPrefix(l, "{") {
		var doc struct {
			ID string `json:"id"`
		}
		if json.Unmarshal([]byte(l), &doc) != nil {
			return ""
		}
		return doc.ID
	}
	if strings.ContainsAny(l, " \t") {
		return ""
	}
	return l
}

// reportRestorable prints what checkRestorable found; false if a
// checkpoint was refused.
func reportRestorable() bool {
	restorable.Lock()
	defer restorable.Unlock()
	if restorable.checked > 0 {
		fmt.Fprintf(os.Stderr, "restorable: %d checkpoints dumped by the suite checked against restore's rules, %d refused\n", restorable.checked, len(restorable.refused))
	}
	for _, r := range restorable.refused {
		fmt.Fprintln(os.Stderr, r)
	}
	return len(restorable.refused) == 0
}

// TestDumpedCheckpointsRestorable checks the checker: a plain dump is
// restorable, and the check ran on it.
func TestDumpedCheckpointsRestorable(t *testing.T) {
	p := startProgram(t, "static", 1)
	store := t.TempDir() + "/store"
	restorable.Lock()
	before := restorable.checked
	restorable.Unlock()
	id := lastLine(ckptfs(t, "dump", "-s", store, itoa(p.Pid)))
	restorable.Lock()
	after := restorable.checked
	restorable.Unlock()
	if after != before+1 {
		t.Fatalf("dump of %s was not checked (%d checks before, %d after)", id, before, after)
	}
	if _, errOut, err := ckptfsRun(t, "restorable", "-s", store, "nosuchid"); err == nil {
		t.Fatalf("restorable of a missing checkpoint succeeded\n%s", errOut)
	}
}
