// Command ckptfs checkpoints running Linux process trees into a
// page-deduplicated store, shows checkpoints as a FUSE tree and restores them.
package main

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

var rootCmd = &cobra.Command{
	Use:   "ckptfs",
	Short: "Transparent checkpoint/restore of Linux process trees into a deduplicated store",
	Long: `ckptfs dumps a running process tree (ptrace, no help from the program) into a
content-addressed store where every 4 KiB page is kept once across all
checkpoints, shows every checkpoint as a read-only /proc-like FUSE tree, and
restores processes from that tree with their pids, memory and files.

Exit status: 0 ok, 1 error, 2 usage, 3 refused (cannot be checkpointed as
it is), 10 no such store, 11 store locked or in use, 12 damage found,
130/143 interrupted (docs/cli.md).`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

// globals are the flags every command takes (docs/cli.md).
var globals struct {
	json     bool   // machine-readable output on stdout
	quiet    bool   // no progress, no informational messages
	logLevel string // diagnostics log level: debug, info, warn, error
	logFile  string // diagnostics log file (-o)
}

func init() {
	pf := rootCmd.PersistentFlags()
	pf.BoolVar(&globals.json, "json", false, "print machine-readable JSON on stdout (docs/cli.md has the schema)")
	pf.BoolVarP(&globals.quiet, "quiet", "q", false, "print no progress and no informational messages")
	pf.StringVar(&globals.logLevel, "log-level", "", "write a diagnostics log at this level (debug, info, warn, error); to stderr unless -o")
	pf.StringVarP(&globals.logFile, "log-file", "o", "", "write the diagnostics log to FILE (level info unless --log-level)")
	rootCmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
}

// globalArgs gives the global flags again, for a process ckptfs starts of
// itself (dump-tracer).
func globalArgs() []string {
	var a []string
	if globals.json {
		a = append(a, "--json")
	}
	if globals.quiet {
		a = append(a, "--quiet")
	}
	if globals.logLevel != "" {
		a = append(a, "--log-level", globals.logLevel)
	}
	if globals.logFile != "" {
		a = append(a, "--log-file", globals.logFile)
	}
	return a
}

// addStoreFlag adds -s/--store to cmd; the default comes from $CKPTFS_STORE.
func addStoreFlag(cmd *cobra.Command, dst *string) {
	cmd.Flags().StringVarP(dst, "store", "s", os.Getenv("CKPTFS_STORE"), "store directory (default $CKPTFS_STORE)")
	cmd.RegisterFlagCompletionFunc("store", completeDirs)
}

// requireStore returns a usage error when no store was given.
func requireStore(dir string) error {
	if dir == "" {
		return usageErr(fmt.Errorf("no store: pass -s STORE or set CKPTFS_STORE"))
	}
	return nil
}

// privateUmask makes every file this process creates from here on private
// to its user: the store commands call it, so that the files Badger adds
// to a store (value logs, tables) are 0600 like the rest
// (docs/security.md). restore does not: it recreates files with the modes
// a checkpoint recorded.
func privateUmask() { unix.Umask(0o077) }

// markUsageErrors makes the argument checks of every command return usage
// errors (exit status 2).
func markUsageErrors(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error { return usageErr(check(cmd, args)) }
	}
	for _, sub := range c.Commands() {
		markUsageErrors(sub)
	}
}

// run runs ckptfs with args and returns its exit status.
func run(args []string) int {
	markUsageErrors(rootCmd)
	rootCmd.SetArgs(args)
	// The commands cobra adds itself when it executes, there now, so that
	// Find knows them; the completion requests are not looked up.
	rootCmd.InitDefaultHelpCmd()
	rootCmd.InitDefaultCompletionCmd()
	complete := len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd)
	var err error
	if _, _, ferr := rootCmd.Find(args); ferr != nil && !complete {
		// An unknown command: the flags were not parsed.
		globals.json = slices.Contains(args, "--json")
		err = usageErr(ferr)
	} else {
		err = rootCmd.Execute()
	}
	code := exitCodeOf(err)
	closeLog(err, code)
	if err != nil {
		reportError(err, code)
	}
	return code
}

// reportError prints err on stderr: a line, or with --json a JSON message.
func reportError(err error, code int) {
	if globals.json {
		writeJSONLine(os.Stderr, errorMessage{MessageType: "error", Code: code, CodeName: exitCodeName(code), Message: err.Error()})
		return
	}
	fmt.Fprintln(os.Stderr, "ckptfs:", err)
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(os.Stderr, "Run 'ckptfs --help' or 'ckptfs COMMAND --help' for usage.")
	}
}

func main() { os.Exit(run(os.Args[1:])) }
