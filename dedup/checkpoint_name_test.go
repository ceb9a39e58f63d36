package dedup

import (
	"github.com/ckptfs/ckptfs/image"
	"strings"
	"testing"
)

func TestCheckEntryName(t *testing.T) {
	for _, ok := range []string{"web", "a b", "line\nbreak", "x.y", "...", strings.Repeat("n", 255)} {
		if err := CheckEntryName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "/", "nul\x00", strings.Repeat("n", 256)} {
		if err := CheckEntryName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCommitRefusesBadName(t *testing.T) {
	s := openT(t)
	for _, c := range []*image.Checkpoint{{Name: "../escape", RootPID: 1}, {ID: "..", RootPID: 1}} {
		if err := s.Commit(c); err == nil {
			t.Fatalf("checkpoint id %q name %q was committed", c.ID, c.Name)
		}
	}
}
