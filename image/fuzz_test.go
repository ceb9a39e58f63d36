package image

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// Fuzz targets of the tree format: whatever bytes a tree file holds, Load
// and the file parsers return an error or a model, never panic or hang.
// Seeds are in testdata/fuzz/<target>/ and run with plain `go test`; fuzz
// with e.g. go test ./image -run '^$' -fuzz '^FuzzLoad$' -parallel 1.

// fuzzTree is a tree to mutate: the hostile sample checkpoint (format 2)
// or the golden format-1 tree, with the list of its regular files.
type fuzzTree struct {
	dir   string
	files []string // relative, sorted
}

// fuzzTrees writes both trees under base.
func fuzzSetup(base string) (fuzzTrees [2]fuzzTree, fuzzErr error) {
	src := memSource{}
	fuzzTrees[0].dir = filepath.Join(base, "format2")
	if fuzzErr = WriteTree(fuzzTrees[0].dir, Render(hostileCheckpoint(src), src)); fuzzErr != nil {
		return
	}
	fuzzTrees[1].dir = filepath.Join(base, "format1")
	if fuzzErr = copyTree(goldenTree("format1"), fuzzTrees[1].dir); fuzzErr != nil {
		return
	}
	for i := range fuzzTrees {
		ft := &fuzzTrees[i]
		fuzzErr = filepath.WalkDir(ft.dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				rel, _ := filepath.Rel(ft.dir, p)
				ft.files = append(ft.files, rel)
			}
			return err
		})
		if fuzzErr != nil {
			return
		}
		sort.Strings(ft.files)
	}
	return
}

// FuzzLoad replaces one file of a valid tree (chosen by which: bit 7 picks
// the format-1 tree, the rest the file) with data and loads the tree.
func FuzzLoad(f *testing.F) {
	fuzzTrees, err := fuzzSetup(f.TempDir()) // once per fuzzing process
	if err != nil {
		f.Fatal(err)
	}
	for i := range fuzzTrees {
		for j, rel := range fuzzTrees[i].files {
			if filepath.Base(rel) == "pages" {
				continue
			}
			b, err := os.ReadFile(filepath.Join(fuzzTrees[i].dir, rel))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i<<7|j%128), b)
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		ft := &fuzzTrees[which>>7]
		rel := ft.files[int(which&0x7f)%len(ft.files)]
		p := filepath.Join(ft.dir, rel)
		orig, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(p, orig, 0o600)
		c, err := Load(ft.dir)
		if err == nil {
			Render(c, memSource{}) // a loaded model renders
		}
	})
}

// FuzzParseKV parses a key: value file and reads it as Load would.
func FuzzParseKV(f *testing.F) {
	f.Add([]byte("format: 2\nid: \"x\"\nname: \"a\\npath: /etc/hostname\"\nroot_pid: 1\n"), uint8(2))
	f.Add([]byte("kind: file\npath: /tmp/a b\npath: /etc\nflags: 0100002\npos: -1\n"), uint8(1))
	f.Fuzz(func(t *testing.T, b []byte, version uint8) {
		k := parseKV("f", b)
		k.version = int(version%3) + 0
		for _, key := range []string{"format", "id", "name", "path", "flags", "pos", "root_pid"} {
			k.text(key)
			k.textOpt(key)
			k.u64(key)
			k.u64Max(key, userEnd)
			k.i64Range(key, -1, 1<<40)
			k.idsRange(key)
			k.boolOpt(key)
		}
		k.checkKeys()
	})
}

// FuzzTextQuote: free text comes back exactly, and is one line.
func FuzzTextQuote(f *testing.F) {
	for _, h := range hostile {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := QuoteText(s)
		for i := 0; i < len(q); i++ {
			if q[i] == '\n' || q[i] == '\r' {
				t.Fatalf("QuoteText(%q) = %q holds a line break", s, q)
			}
		}
		u, err := UnquoteText(q)
		if err != nil || u != s {
			t.Fatalf("UnquoteText(QuoteText(%q)) = %q, %v", s, u, err)
		}
		UnquoteText(s)
		legacyText(s)
		k := parseKV("f", []byte(TextLine("name", s)+"\n"))
		if got := k.text("name"); got != s || k.err != nil {
			t.Fatalf("kv text %q: got %q, %v", s, got, k.err)
		}
	})
}

// FuzzTextFiles feeds the other text parsers of a tree: limits,
// sigactions, siginfo records, inotify watch lines, object lines.
func FuzzTextFiles(f *testing.F) {
	src := memSource{}
	c := hostileCheckpoint(src)
	f.Add([]byte(renderLimits(c.Tasks[0].Limits)), "inotify-watch: wd=1 mask=0x2 path=\"/a\"")
	f.Add([]byte(renderSigactions(c.Tasks[0].Sigactions)), "msg: 3 \"@x\"")
	f.Add([]byte("Limit Soft Hard Units\nMax open files 1 2 files\nMax open files 3 4 files\n"), "inotify-watch: wd=1 mask=0x2 path=/raw")
	f.Fuzz(func(t *testing.T, b []byte, line string) {
		ParseLimits(b)
		parseSigactions("sigactions", b)
		unpackSiginfo("sigpending", b)
		InotifyWatches(&FD{Extra: []string{line, string(b)}})
		legacyInotifyLines([]string{line})
		for _, kind := range []string{ObjUnixSocket, ObjDeletedFile, ObjMemfd} {
			legacyObjectLine(kind, "msg", line, line)
			legacyObjectLine(kind, "name", line, line)
		}
		for _, strict := range []bool{false, true} {
			for kind, schema := range objectSchemas {
				schema.parse(&Object{Kind: kind, Info: []string{line, string(b)}, Data: b}, strict)
			}
			for kind := range fdSchemas {
				canonFD(&FD{Kind: kind, Extra: []string{line, string(b)}}, strict)
			}
		}
	})
}
