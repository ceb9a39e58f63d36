package dedup

import (
	"errors"
	"fmt"
	"testing"
)

func TestRemoteErrorKeepsSentinels(t *testing.T) {
	for _, e := range []error{ErrBusy, ErrLocked, ErrNotStore, ErrDamaged, ErrPageCorrupt} {
		msg := fmt.Errorf("gc /x: %w", e).Error()
		got := remoteError(msg)
		if !errors.Is(got, e) || got.Error() != msg {
			t.Errorf("remoteError(%q) = %v, not %v", msg, got, e)
		}
	}
	if got := remoteError("something else"); errors.Is(got, ErrBusy) || got.Error() != "something else" {
		t.Errorf("plain message: %v", got)
	}
}
