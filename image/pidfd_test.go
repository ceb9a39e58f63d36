package image

import (
	"slices"
	"testing"
)

// TestPidfdLines: an exited or outside pidfd renders and reads back; a
// Pid of 0 or below -1, or an unknown key read strictly, is refused.
func TestPidfdLines(t *testing.T) {
	p := Pidfd{Pid: -1, Outside: 999}
	if got := p.Lines(); !slices.Equal(got, []string{"Pid: -1", "outside: 999"}) {
		t.Fatalf("lines %q", got)
	}
	back, err := ParsePidfd(&FD{Kind: FDPidfd, Extra: p.Lines()}, true)
	if err != nil || back != p {
		t.Fatalf("read back %+v %v", back, err)
	}
	for _, bad := range [][]string{{"Pid: 0"}, {"Pid: -2"}, {"Pid: 5", "NSpid: 5"}, {}} {
		if _, err := ParsePidfd(&FD{Kind: FDPidfd, Extra: bad}, true); err == nil {
			t.Errorf("%q read", bad)
		}
	}
}
