package dedup

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ckptfs/ckptfs/image"
	"github.com/zeebo/blake3"
)

// The stores under testdata/stores/ were made by `ckptfs dump` of the
// version that wrote that store format (testdata/stores/README.md says
// how). Every later version must read them: this test opens a copy of each,
// lists, loads and renders its checkpoints, compares them with the digest
// recorded beside the store (<store>.json) and runs Verify.

var writeGolden = flag.Bool("write-golden", false, "rewrite testdata/stores/*.json from the stores")

const goldenDir = "../testdata/stores"

func TestGoldenStores(t *testing.T) {
	for _, v := range []string{"v1", "v2", "v3", "v4"} {
		t.Run(v, func(t *testing.T) {
			src := filepath.Join(goldenDir, v)
			if _, err := os.Stat(src); err != nil {
				t.Fatalf("golden store %s: %v", src, err)
			}
			dir := copyStore(t, src)
			if v != "v4" {
				// Older formats are refused, then read after ckptfs
				// migrate.
				if _, err := Open(dir); !errors.Is(err, ErrOldStore) || !strings.Contains(err.Error(), "ckptfs migrate -s") {
					t.Fatalf("open of golden store %s: %v, want it refused with the way to migrate", v, err)
				}
				if _, err := Migrate(dir); err != nil {
					t.Fatalf("migrate golden store %s: %v", v, err)
				}
			}
			s, err := Open(dir)
			if err != nil {
				t.Fatalf("open golden store %s: %v", v, err)
			}
			defer s.Close()
			got := digestStore(t, s)
			want := filepath.Join(goldenDir, v+".json")
			if *writeGolden {
				b, _ := json.MarshalIndent(got, "", "  ")
				if err := os.WriteFile(want, append(b, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			b, err := os.ReadFile(want)
			if err != nil {
				t.Fatal(err)
			}
			var exp []checkpointDigest
			if err := json.Unmarshal(b, &exp); err != nil {
				t.Fatalf("%s: %v", want, err)
			}
			if !reflect.DeepEqual(got, exp) {
				g, _ := json.MarshalIndent(got, "", "  ")
				t.Fatalf("golden store %s reads differently now:\n%s\nwant (%s):\n%s", v, g, want, b)
			}
			problems, err := s.Verify()
			if err != nil || len(problems) > 0 {
				t.Fatalf("verify golden store %s: %v %q", v, err, problems)
			}
		})
	}
}

// checkpointDigest is what the golden test compares: the facts of a
// checkpoint that no format change may alter.
type checkpointDigest struct {
	ID, Name, Time string
	RootPID        int
	Summary        Summary
	Tasks          []taskDigest
	// Memory is the BLAKE3 of every pages file of the rendered tree, in
	// task and vma order: the pages read back through the store.
	Memory string
}

type taskDigest struct {
	PID, PPID       int
	Comm, Exe, Cwd  string
	UID             [4]int
	Threads         []int
	RIP, RSP        uint64
	FDs             []string
	VMAs            []string // "start-end perms name: index:hash ..."
	Cmdline, Auxv   string   // BLAKE3
	Sigactions, Lim int
}

func digestStore(t *testing.T, s *Store) []checkpointDigest {
	t.Helper()
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) == 0 {
		t.Fatal("golden store lists no checkpoint")
	}
	var out []checkpointDigest
	for _, sum := range list {
		c, err := s.Load(sum.ID)
		if err != nil {
			t.Fatalf("load %s: %v", sum.ID, err)
		}
		d := checkpointDigest{ID: c.ID, Name: c.Name, Time: c.Time.UTC().Format("2006-01-02T15:04:05.999999999Z"),
			RootPID: c.RootPID, Summary: sum}
		d.Summary.Time = d.Summary.Time.UTC()
		for _, task := range c.Tasks {
			td := taskDigest{PID: task.PID, PPID: task.PPID, Comm: task.Comm, Exe: task.Exe, Cwd: task.Cwd,
				UID: task.Creds.UID, Cmdline: hashOf(task.Cmdline), Auxv: hashOf(task.Auxv),
				Sigactions: len(task.Sigactions), Lim: len(task.Limits)}
			for _, th := range task.Threads {
				td.Threads = append(td.Threads, th.TID)
			}
			td.RIP, td.RSP = task.Threads[0].Regs.Rip, task.Threads[0].Regs.Rsp
			for _, f := range task.FDs {
				td.FDs = append(td.FDs, fmt.Sprintf("%d %s %s", f.Num, f.Kind, f.Path))
			}
			for _, v := range task.VMAs {
				l := fmt.Sprintf("%s %s %s:", v.DirName(), v.Perms, v.Name)
				for _, r := range v.Pages {
					l += fmt.Sprintf(" %d:%s", r.Index, r.Hash.String()[:16])
				}
				td.VMAs = append(td.VMAs, l)
			}
			d.Tasks = append(d.Tasks, td)
		}
		d.Memory = renderedMemory(t, c, s)
		out = append(out, d)
	}
	return out
}

// renderedMemory renders c and hashes the contents of every pages file.
func renderedMemory(t *testing.T, c *image.Checkpoint, src image.PageSource) string {
	t.Helper()
	root := image.Render(c, src)
	h := blake3.New()
	for _, task := range c.Tasks {
		for _, v := range task.VMAs {
			n := lookupPath(root, "tasks", fmt.Sprint(task.PID), "vmas", v.DirName(), "pages")
			f, ok := n.(image.File)
			if !ok {
				t.Fatalf("rendered tree of %s has no pages file for task %d vma %s", c.ID, task.PID, v.DirName())
			}
			size, err := f.Size()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
				t.Fatalf("read pages of task %d vma %s: %v", task.PID, v.DirName(), err)
			}
		}
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func lookupPath(n image.Node, names ...string) image.Node {
	for _, name := range names {
		d, ok := n.(*image.Dir)
		if !ok {
			return nil
		}
		if n = d.Lookup(name); n == nil {
			return nil
		}
	}
	return n
}

func hashOf(b []byte) string {
	s := blake3.Sum256(b)
	return fmt.Sprintf("%x", s[:8])
}

// copyStore copies the store directory src (Badger's files and the packs
// directory) to a temporary directory, since opening writes to it.
func copyStore(t *testing.T, src string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	if out, err := exec.Command("cp", "-r", src, dir).CombinedOutput(); err != nil {
		t.Fatalf("copy store: %v %s", err, out)
	}
	return dir
}
