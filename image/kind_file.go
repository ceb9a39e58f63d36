package image

import "strings"

// Regular files, directories and character devices (ttys included) have no
// lines of their own: an fd of theirs is its path, flags and offset (and a
// file's size), the FD fields; a deleted regular file is an object
// (kind_deletedfile.go), a memfd too (kind_memfd.go). An fd of a kind
// ckptfs does not know is "other".

// refuseOther: an anonymous inode (or anything else) of a kind ckptfs does
// not know cannot be recreated.
func refuseOther(f *FD) (string, string) {
	return strings.TrimPrefix(f.Path, "anon_inode:"), f.Path
}

// refuseDeletedPath: a file reopened by path must still have one; a
// deleted regular file is an object (kind_deletedfile.go) instead.
func refuseDeletedPath(f *FD) (string, string) {
	if f.Deleted && f.Object == "" && f.Kind != FDFile {
		return "a " + f.Kind + " deleted at dump time (only a regular file's contents are saved)", f.Path
	}
	return "", ""
}

// FileID is what names the file a regular file's fd had open beyond its
// path, recorded by the dumper where the kernel gives it:
//
//	dev: 2049          st_dev of the file (the fd's ino line is st_ino)
//	handle: 1:0a1b..   name_to_handle_at: handle type and bytes, hex
//
// A restore checks it before it opens a file with more rights than the
// task's own (a file a root parent opened before its child changed uid):
// only if the path leads to that same file (docs/security.md).
type FileID struct {
	Dev    uint64
	Handle string
}

// Lines renders id as its fdinfo lines (none for a zero id).
func (id FileID) Lines() []string {
	var w lineWriter
	if id.Dev != 0 {
		w.add("dev", "%d", id.Dev)
	}
	if id.Handle != "" {
		w.add("handle", "%s", id.Handle)
	}
	return w
}

// ParseFileID reads the identity lines of regular file fd f (none: a
// tree made before they were recorded, or a file system without handles).
func ParseFileID(f *FD, strict bool) (FileID, error) {
	k := fdKindLines(f, []string{"dev", "handle"}, nil, strict)
	id := FileID{Dev: k.uintOpt("dev", 10, 64), Handle: k.opt("handle")}
	if id.Handle != "" && !validHandle(id.Handle) {
		k.fail("handle %.80q is not TYPE:HEX", id.Handle)
	}
	return id, k.err
}

// validHandle: a decimal handle type, a colon, an even number of
// lowercase hex digits (MAX_HANDLE_SZ is 128 bytes).
func validHandle(s string) bool {
	t, h, ok := strings.Cut(s, ":")
	if !ok || t == "" || len(t) > 11 || h == "" || len(h)%2 != 0 || len(h) > 256 {
		return false
	}
	for i, c := range t {
		if !(c >= '0' && c <= '9' || c == '-' && i == 0 && len(t) > 1) {
			return false
		}
	}
	for _, c := range h {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func fileLines(f *FD, strict bool) ([]string, error) {
	id, err := ParseFileID(f, strict)
	return id.Lines(), err
}
