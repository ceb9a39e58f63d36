package tests

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// An old store (the golden stores of formats 1, 2 and 3) is refused by the
// store commands with a message naming ckptfs migrate; ckptfs migrate
// converts it, after which ls shows its checkpoints, verify passes, a
// new dump goes in and a second migrate has nothing to do. migrate of a
// directory that is no store says so.
func TestMigrateCLI(t *testing.T) {
	for _, v := range []string{"v1", "v2", "v3"} {
		t.Run(v, func(t *testing.T) {
			store := filepath.Join(t.TempDir(), "store")
			if out, err := exec.Command("cp", "-r", filepath.Join("..", "testdata", "stores", v), store).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v %s", err, out)
			}
			_, errOut, err := ckptfsErr(t, "ls", "-s", store)
			if err == nil || !strings.Contains(errOut, "ckptfs migrate -s "+store) {
				t.Fatalf("ls of a %s store: %v, stderr %q; want a pointer to ckptfs migrate", v, err, errOut)
			}
			out := ckptfs(t, "migrate", "-s", store)
			if !strings.Contains(out, "-> 4: 2 checkpoint(s)") {
				t.Fatalf("migrate said %q", out)
			}
			ls := ckptfs(t, "ls", "-s", store)
			if !strings.Contains(ls, "first") || !strings.Contains(ls, "second") {
				t.Fatalf("ls after migrate:\n%s", ls)
			}
			ckptfs(t, "verify", "-s", store)
			p := startProgram(t, "static", 1)
			ckptfs(t, "dump", "-s", store, "--name", "new", itoa(p.Pid))
			ckptfs(t, "verify", "-s", store)
			if out := ckptfs(t, "migrate", "-s", store); !strings.Contains(out, "nothing to do") {
				t.Fatalf("second migrate said %q", out)
			}
		})
	}
	_, errOut, err := ckptfsErr(t, "migrate", "-s", t.TempDir())
	if err == nil || !strings.Contains(errOut, "not a ckptfs store") {
		t.Fatalf("migrate of an empty directory: %v, stderr %q", err, errOut)
	}
}
