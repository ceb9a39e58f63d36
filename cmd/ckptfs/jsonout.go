package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
)

// JSON output (--json, docs/cli.md): a command that prints one result
// prints it as one JSON document on stdout; dump and restore print JSON
// lines, each an object with a "message_type" (status, summary), as
// restic does. Errors go to stderr as {"message_type":"error",...}.

// errorMessage is what a failed command prints on stderr with --json.
type errorMessage struct {
	MessageType string `json:"message_type"` // "error"
	Code        int    `json:"code"`         // the exit status
	CodeName    string `json:"code_name"`    // its name: usage, refused, no_store, ...
	Message     string `json:"message"`
}

var jsonMu sync.Mutex

// writeJSONLine writes v as one line of JSON.
func writeJSONLine(w io.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(errorMessage{MessageType: "error", Code: exitError, CodeName: "error", Message: fmt.Sprintf("json: %v", err)})
	}
	jsonMu.Lock()
	defer jsonMu.Unlock()
	w.Write(append(b, '\n'))
}

// printJSON prints v as the command's JSON document on stdout.
func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// infof prints an informational message on stderr, unless --quiet; with
// --json it is a {"message_type":"info"} line.
func infof(format string, args ...any) {
	if globals.quiet {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if globals.json {
		writeJSONLine(os.Stderr, struct {
			MessageType string `json:"message_type"`
			Message     string `json:"message"`
		}{"info", msg})
		return
	}
	logOutput().Write([]byte("ckptfs: " + msg + "\n"))
}
