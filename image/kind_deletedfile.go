package image

// DeletedFile is the info of a regular file that was unlinked while open
// (objects/file-<ino>): its path and mode; its data are its contents.
type DeletedFile struct {
	Path string
	Mode uint32 // permission bits (07777)
}

// Info renders d as its info lines.
func (d *DeletedFile) Info() []string {
	var w lineWriter
	w.text("path", d.Path)
	w.add("mode", "%o", d.Mode)
	return w
}

// DeletedFileID names the object of the deleted file with inode ino.
func DeletedFileID(ino uint64) string { return "file-" + u64(ino) }

// ParseDeletedFile reads the info of deleted-file object o.
func ParseDeletedFile(o *Object, strict bool) (*DeletedFile, error) {
	k := readKindLines("object "+o.ID, o.Info, []string{"path", "mode"}, nil, strict)
	d := &DeletedFile{Path: k.textReq("path"), Mode: uint32(k.uint("mode", 8, 32))}
	if k.err == nil && d.Mode&^0o7777 != 0 {
		k.fail("mode %o has more than permission bits", d.Mode)
	}
	return d, k.err
}

func parseDeletedFileInfo(o *Object, strict bool) ([]string, error) {
	d, err := ParseDeletedFile(o, strict)
	return d.Info(), err
}
