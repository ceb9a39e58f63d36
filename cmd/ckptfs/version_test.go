package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestVersionFromBuildInfo builds ckptfs with VCS stamping and a version
// set at link time: version shows both, as text and JSON.
func TestVersionFromBuildInfo(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds ckptfs again")
	}
	if err := exec.Command("git", "rev-parse", "HEAD").Run(); err != nil {
		t.Skipf("not in a git checkout: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "ckptfs")
	build := exec.Command("go", "build", "-buildvcs=true", "-ldflags", "-X main.version=v9.8.7-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	validate(t, "version", string(out))
	var v versionInfo
	json.Unmarshal(out, &v)
	if v.Version != "v9.8.7-test" || v.StoreFormat == 0 || v.TreeFormat == 0 {
		t.Errorf("version %+v", v)
	}
	text, _ := exec.Command(bin, "--version").Output()
	if !strings.HasPrefix(string(text), "ckptfs v9.8.7-test") || !strings.Contains(string(text), "store format") {
		t.Errorf("--version:\n%s", text)
	}
	// The go command stamps no VCS information in some checkouts (here:
	// a git worktree, whose .git is a file): then there is no commit.
	stamped, _ := exec.Command("go", "version", "-m", bin).Output()
	if !strings.Contains(string(stamped), "vcs.revision") {
		t.Logf("go build stamped no VCS information here; commit not checked")
		return
	}
	head, _ := exec.Command("git", "rev-parse", "HEAD").Output()
	if v.Commit != strings.TrimSpace(string(head)) || v.CommitTime == "" {
		t.Errorf("commit %q at %q, HEAD %s", v.Commit, v.CommitTime, head)
	}
	if !regexp.MustCompile(`^ckptfs v9\.8\.7-test \([0-9a-f]{12}(-dirty)? `).Match(text) {
		t.Errorf("--version without the commit:\n%s", text)
	}
}
