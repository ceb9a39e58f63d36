package dumper

import "testing"

// FuzzParseInotifyLine: any inotify fdinfo line gives a watch or an error,
// never a panic. Seeds in testdata/fuzz/FuzzParseInotifyLine run with plain
// `go test`; fuzz with
// go test ./dumper -run '^$' -fuzz '^FuzzParseInotifyLine$' -parallel 1.
func FuzzParseInotifyLine(f *testing.F) {
	f.Add("inotify wd:3 ino:1a2b sdev:fd00001 mask:fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:2b1a000000000000")
	f.Add("inotify wd:0 f_handle:zz")
	f.Fuzz(func(t *testing.T, line string) {
		w, err := parseInotifyLine(line)
		if err == nil && w.wd <= 0 {
			t.Fatalf("parseInotifyLine(%q) accepted wd %d", line, w.wd)
		}
	})
}
