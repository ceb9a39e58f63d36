package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/sys/unix"
)

// schemaFile is the documented schema of --json output.
var schemaFile, _ = filepath.Abs("../../docs/schema/ckptfs.json")

// validate checks doc against the schema's definition def.
func validate(t testing.TB, def, doc string) {
	t.Helper()
	c := jsonschema.NewCompiler()
	sch, err := c.Compile(schemaFile + "#/$defs/" + def)
	if err != nil {
		t.Fatalf("schema %s: %v", def, err)
	}
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
	if err != nil {
		t.Fatalf("%s: not JSON: %v\n%s", def, err, doc)
	}
	if err := sch.Validate(inst); err != nil {
		t.Errorf("%s does not match its schema: %v\n%s", def, err, doc)
	}
}

// validateLines checks every line of out against def.
func validateLines(t testing.TB, def, out string) []map[string]any {
	t.Helper()
	var msgs []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		validate(t, def, l)
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// splitStatus checks the status lines that come before the document of
// verify, gc and copy (a stream of JSON values) and returns them parsed,
// and the document.
func splitStatus(t testing.TB, out string) (status []map[string]any, doc string) {
	t.Helper()
	var rest []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(l, `{"message_type":"status"`) {
			rest = append(rest, l)
			continue
		}
		validate(t, "status", l)
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		status = append(status, m)
	}
	return status, strings.Join(rest, "\n")
}

func TestJSONVersionCheck(t *testing.T) {
	validate(t, "version", mustCkptfs(t, "version", "--json").stdout)
	validate(t, "version", mustCkptfs(t, "--json", "--version").stdout)
	validate(t, "check", mustCkptfs(t, "check", "--json").stdout)
}

func TestJSONErrors(t *testing.T) {
	for _, args := range [][]string{{"--json", "frob"}, {"--json", "ls", "-s", "/nonexistent/store"}} {
		r := ckptfs(t, args...)
		validate(t, "error", lastLine(r.stderr))
		if r.stdout != "" {
			t.Errorf("%v: stdout %q", args, r.stdout)
		}
	}
}

// TestJSONCommands dumps a real process twice, and checks the --json
// output of dump, ls, stats, verify, rm, gc, then of a restore from a
// mount of the store, against the schema.
func TestJSONCommands(t *testing.T) {
	needRoot(t)
	sleeper := startSleeperCmd(t)
	pid := sleeper.Process.Pid
	store := filepath.Join(t.TempDir(), "store")
	var ids []string
	for i := 0; i < 2; i++ {
		r := mustCkptfs(t, "dump", "--json", "-s", store, "--name", "sleeper", strconv.Itoa(pid))
		msgs := validateLines(t, "dump_line", r.stdout)
		last := msgs[len(msgs)-1]
		if last["message_type"] != "summary" || last["root_pid"] != float64(pid) {
			t.Fatalf("last dump line: %v", last)
		}
		ids = append(ids, last["id"].(string))
		if strings.Contains(r.stderr, "\r") || strings.Contains(r.stderr, "\x1b[") {
			t.Errorf("terminal output with --json: %q", r.stderr)
		}
	}
	ls := mustCkptfs(t, "ls", "--json", "-s", store).stdout
	validate(t, "ls", ls)
	var list []checkpointJSON
	json.Unmarshal([]byte(ls), &list)
	if len(list) != 2 || list[0].ID != ids[0] || list[1].Name != "sleeper" {
		t.Errorf("ls --json: %+v, dumped %v", list, ids)
	}
	validate(t, "stats", mustCkptfs(t, "stats", "--json", "-s", store).stdout)
	status, doc := splitStatus(t, mustCkptfs(t, "verify", "--json", "-s", store).stdout)
	validate(t, "verify", doc)
	if len(status) == 0 {
		t.Errorf("verify --json of a local store: no status line")
	}

	// Restore the newest from a mount, as a script would.
	mnt := t.TempDir()
	mustCkptfs(t, "mount", "--daemon", store, mnt)
	defer unmountRetry(mnt)
	killChild(sleeper)
	waitGone(t, pid)
	restoreLog := filepath.Join(t.TempDir(), "restore.log")
	r := mustCkptfs(t, "restore", "--json", "-o", restoreLog, "--log-level", "debug", filepath.Join(mnt, "latest"))
	checkLog(t, restoreLog, "restore: done", "syscall=clone3")
	msgs := validateLines(t, "restore_line", r.stdout)
	last := msgs[len(msgs)-1]
	if last["root_pid"] != float64(pid) {
		t.Errorf("restored %v, dumped %d", last["root_pid"], pid)
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); string(bytes.TrimSpace(comm)) != "sleep" {
		t.Errorf("pid %d after restore is %q", pid, comm)
	}
	unix.Kill(pid, unix.SIGKILL)
	waitGone(t, pid)

	// rm and gc go through the mount that owns the store.
	validate(t, "rm", mustCkptfs(t, "rm", "--json", "-s", store, ids[0]).stdout)
	_, doc = splitStatus(t, mustCkptfs(t, "gc", "--json", "-s", store).stdout)
	validate(t, "gc", doc)
}

// TestJSONStatusLines: status lines come at most once a second per phase
// and at the end of each: a dump of a few MiB has a status line for its
// copy and store phases, complete.
func TestJSONStatusLines(t *testing.T) {
	needRoot(t)
	cmd := exec.Command("python3", "-c", "import time\nb = bytearray(range(256)) * (32 << 12)\nprint('ready', flush=True)\ntime.sleep(1000)")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("python3: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(t.TempDir(), "store")
	r := mustCkptfs(t, "dump", "--json", "-s", store, strconv.Itoa(cmd.Process.Pid))
	done := map[string]bool{}
	for _, m := range validateLines(t, "dump_line", r.stdout) {
		if m["message_type"] == "status" && m["bytes_done"] == m["bytes_total"] {
			done[m["phase"].(string)] = true
		}
	}
	for _, p := range []string{"copy", "store", "commit"} {
		if !done[p] {
			t.Errorf("no complete status line for %s:\n%s", p, r.stdout)
		}
	}
}
