package dumper

import (
	"os"
	"reflect"
	"testing"

	"github.com/ckptfs/ckptfs/image"
)

func TestNSPIDs(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []int
		bad  bool
	}{
		{"1234", nil, false},
		{"", nil, false},
		{"1234\t1", []int{1234, 1}, false},
		{"1234 56 2", []int{1234, 56, 2}, false},
		{"1234 x", nil, true},
		{"1234 0", nil, true},
	} {
		got, err := nsPIDs(c.in)
		if (err != nil) != c.bad || !reflect.DeepEqual(got, c.want) {
			t.Errorf("nsPIDs(%q) = %v, %v", c.in, got, err)
		}
	}
}

// TestCheckPidNamespacesHere: a tree in the dumper's own namespace passes;
// collected tasks of different depths do not.
func TestCheckPidNamespacesHere(t *testing.T) {
	if err := checkPidNamespaces([]int{os.Getpid()}); err != nil {
		t.Fatal(err)
	}
	c := &image.Checkpoint{RootPID: 10, Tasks: []*image.Task{{PID: 10}, {PID: 11, NSpid: []int{11, 1}}}}
	if err := checkCollectedLevels(c); err == nil {
		t.Fatal("a tree spanning namespaces passed")
	}
}
