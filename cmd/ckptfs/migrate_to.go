package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/dedup"
)

// `ckptfs migrate PID --to STORE` moves a running tree to another host
// through a store both can reach (a bucket, or a directory the other
// host mounts): a tracked pre-copy into that store while the tree runs
// (dump --pre-copy), a final short freeze for what was written since,
// the tree killed once the checkpoint is committed (--kill), and the
// restore on the destination left to the user, with the commands printed.

// migrateToFlags are migrate's flags of a process migration.
type migrateToFlags struct {
	to             string
	name           string
	verbose        bool
	tcpEstablished bool
	memBudget      int64
}

func (m *migrateToFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&m.to, "to", "", "migrate process PID into this store (s3://BUCKET/PREFIX, or a directory the destination host reaches)")
	cmd.Flags().StringVar(&m.name, "name", "", "with --to: name the checkpoint")
	cmd.Flags().BoolVarP(&m.verbose, "verbose", "v", false, "with --to: print the duration of every phase of every pass on stderr")
	cmd.Flags().BoolVar(&m.tcpEstablished, "tcp-established", false, "with --to: dump established TCP connections (TCP repair mode)")
	cmd.Flags().Int64Var(&m.memBudget, "mem-budget", 0, "with --to: MiB of pages held in memory while the tree is frozen")
}

// checkMigrateTo refuses a process migration's bad arguments before
// anything is started.
func checkMigrateTo(m migrateToFlags, pidArg string) error {
	if _, err := parsePid(pidArg); err != nil {
		return err
	}
	switch {
	case m.to == "":
		return usageErr(fmt.Errorf("migrate PID needs --to STORE (s3://BUCKET/PREFIX or a directory)"))
	case !dedup.IsRemote(m.to) && strings.Contains(m.to, ":") && !strings.HasPrefix(m.to, "/"):
		return usageErr(fmt.Errorf("--to %s: another host is reached through a store both hosts reach: give s3://BUCKET/PREFIX or a directory, and restore from it there", m.to))
	}
	f := m.dumpFlags()
	return usageErr(f.check())
}

// dumpFlags are the flags of the dump that migrates: a pre-copy into the
// destination store, the tree killed after the commit.
func (m migrateToFlags) dumpFlags() dumpFlags {
	to := m.to
	if !dedup.IsRemote(to) {
		if abs, err := filepath.Abs(to); err == nil {
			to = abs
		}
	}
	return dumpFlags{store: to, name: m.name, kill: true, preCopy: true, verbose: m.verbose,
		tcpEstablished: m.tcpEstablished, memBudget: m.memBudget}
}

// runMigrateTo migrates the tree at pidArg into m.to and prints the
// checkpoint id, and on stderr how to restore it on the destination. It
// returns the dump's exit status.
func runMigrateTo(m migrateToFlags, pidArg string) int {
	f := m.dumpFlags()
	var out bytes.Buffer
	argv := append(append([]string{"dump-tracer", "--control-fd", "3"}, globalArgs()...), f.args()...)
	code := runDumpTracerTo(append(argv, "--", pidArg), io.MultiWriter(os.Stdout, &out))
	if code != 0 {
		return code
	}
	id := dumpedID(out.String())
	if id == "" {
		fmt.Fprintln(os.Stderr, "ckptfs: migrate: the dump printed no checkpoint id")
		return 1
	}
	if !globals.json && !globals.quiet {
		fmt.Fprint(os.Stderr, restoreHint(f.store, id))
	}
	return 0
}

// dumpedID is the checkpoint id in dump's output: its last line, or the
// id of its --json summary.
func dumpedID(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := strings.TrimSpace(lines[len(lines)-1])
	if !strings.HasPrefix(last, "{") {
		return last
	}
	var s struct {
		ID string `json:"id"`
	}
	if json.Unmarshal([]byte(last), &s) != nil {
		return ""
	}
	return s.ID
}

// restoreHint says how to restore checkpoint id of store on the
// destination host.
func restoreHint(store, id string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "migrated: checkpoint %s is in %s and the tree was killed; on the destination host run:\n", id, store)
	env := ""
	if dedup.IsRemote(store) {
		// The service as this host reached it; the credentials are the
		// destination's own.
		for _, v := range []string{"AWS_ENDPOINT_URL", "AWS_REGION"} {
			if val := os.Getenv(v); val != "" {
				env += v + "=" + shellQuote(val) + " "
			}
		}
		fmt.Fprintln(&b, "  (with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set)")
	}
	fmt.Fprintf(&b, "  mkdir -p /run/ckptfs-mnt && %sckptfs mount --daemon -s %s /run/ckptfs-mnt\n", env, shellQuote(store))
	fmt.Fprintf(&b, "  ckptfs restore /run/ckptfs-mnt/%s        # or restore --lazy, --pidns\n", id)
	return b.String()
}

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-:=@+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
