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
