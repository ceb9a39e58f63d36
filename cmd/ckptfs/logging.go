package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/internal/inject"
	"github.com/ckptfs/ckptfs/restorer"
)

// The diagnostics log (log/slog), like CRIU's -v4 -o dump.log: -o FILE
// and/or --log-level LEVEL turn it on (level info, to stderr unless -o).
// At info it has the command, every phase of dump and restore (what -v
// prints) and the outcome; at debug also every system call injected into
// a tracee, with its arguments and result. -v stays the phase summary on
// stderr.

var (
	diag    *slog.Logger // nil: no diagnostics log
	logFile *os.File
)

func init() {
	rootCmd.PersistentPreRunE = func(cmd *cobra.Command, args []string) error { return openLog(cmd) }
}

// openLog sets up the diagnostics log the global flags ask for.
func openLog(cmd *cobra.Command) error {
	if globals.logFile == "" && globals.logLevel == "" {
		return nil
	}
	var level slog.Level
	if globals.logLevel != "" {
		if err := level.UnmarshalText([]byte(globals.logLevel)); err != nil {
			return usageErr(fmt.Errorf("--log-level %q: want debug, info, warn or error", globals.logLevel))
		}
	}
	var w io.Writer = logOutput()
	if globals.logFile != "" {
		// Appended to: dump's two processes write into the same file.
		f, err := os.OpenFile(globals.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("-o: %w", err)
		}
		logFile, w = f, f
	}
	diag = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})).With("pid", os.Getpid())
	diag.Info("start", "command", cmd.CommandPath(), "argv", strings.Join(os.Args[1:], " "))
	if level <= slog.LevelDebug {
		inject.SetTrace(traceInjected)
	}
	return nil
}

// traceInjected logs an injected system call at debug level.
func traceInjected(c inject.Traced) {
	name := restorer.SyscallName(c.Nr)
	if !c.Done {
		args := make([]string, len(c.Args))
		for i, a := range c.Args {
			args[i] = fmt.Sprintf("%#x", a)
		}
		diag.Debug("inject", "tid", c.TID, "syscall", name, "args", strings.Join(args, ","))
		return
	}
	if c.Err != nil {
		diag.Debug("inject done", "tid", c.TID, "syscall", name, "err", c.Err.Error())
		return
	}
	diag.Debug("inject done", "tid", c.TID, "syscall", name, "ret", fmt.Sprintf("%#x", c.Ret))
}

// phaseLog is the Log writer of dump and restore: each phase line goes to
// -v's stderr (when verbose) and to the diagnostics log at info.
func phaseLog(verbose bool) io.Writer {
	if diag == nil {
		if verbose {
			return logOutput()
		}
		return nil
	}
	return phaseWriter{verbose: verbose}
}

type phaseWriter struct{ verbose bool }

func (p phaseWriter) Write(b []byte) (int, error) {
	if p.verbose {
		logOutput().Write(b)
	}
	for _, l := range bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n")) {
		diag.Info("phase", "line", strings.Join(strings.Fields(string(l)), " "))
	}
	return len(b), nil
}

// closeLog ends the diagnostics log with the outcome.
func closeLog(err error, code int) {
	if diag == nil {
		return
	}
	if err != nil {
		diag.Error("failed", "err", err.Error(), "exit", code)
	} else {
		diag.Info("done", "exit", 0)
	}
	inject.SetTrace(nil)
	if logFile != nil {
		logFile.Close()
	}
}
