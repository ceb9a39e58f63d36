package phaselog

import (
	"bytes"
	"regexp"
	"testing"
	"time"
)

func TestPrintf(t *testing.T) {
	var b bytes.Buffer
	l := New(&b, "dump", time.Now().Add(-time.Second))
	l.Printf("%d tasks", 3)
	l.Printf("done")
	re := regexp.MustCompile(`^dump: 3 tasks +[0-9.]+ ms \(total +[0-9.]+ ms\)\ndump: done +[0-9.]+ ms \(total +[0-9.]+ ms\)\n$`)
	if !re.Match(b.Bytes()) {
		t.Fatalf("log:\n%s", b.String())
	}
	var quiet *Log
	quiet.Printf("nothing") // a nil log discards
	New(nil, "x", time.Now()).Printf("nothing")
}
