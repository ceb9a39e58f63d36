package image

import (
	"reflect"
	"testing"
)

func TestInotifyWatchLines(t *testing.T) {
	want := []InotifyWatch{{WD: 1, Mask: 0x2, Path: "/tmp/a dir/with spaces"}, {WD: 4, Mask: 0x40000fff, Path: "/x"}}
	f := &FD{Kind: FDInotify, Extra: []string{"inotify wd:4 ino:1 sdev:2 mask:fff", want[1].Line(), want[0].Line()}}
	got, err := InotifyWatches(f)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("InotifyWatches = %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []string{"inotify-watch: wd=0 mask=0x2 path=\"/a\"", "inotify-watch: wd=1 path=\"/a\"", "inotify-watch: wd=1 mask=0x2 path=", "inotify-watch: wd=1 mask=0x2 path=/raw", "inotify-watch: wd=1 mask=0x2 path=\"\""} {
		if _, err := InotifyWatches(&FD{Extra: []string{bad}}); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	dup := &FD{Extra: []string{want[0].Line(), want[0].Line()}}
	if _, err := InotifyWatches(dup); err == nil {
		t.Error("a wd listed twice parsed")
	}
}
