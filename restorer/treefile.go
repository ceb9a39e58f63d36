package restorer

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openTreeFile opens a file of a checkpoint tree for reading without
// blocking on what it might be instead: O_NONBLOCK so that a FIFO put in
// place of a pages file does not wait for a writer, O_NOCTTY so that a
// terminal does not become ours, and an fstat that refuses anything but a
// regular file before a byte is read. (O_NONBLOCK changes nothing for a
// regular file.)
func openTreeFile(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("checkpoint file %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("checkpoint file %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("checkpoint file %s: not a regular file (%s)", path, fileType(st.Mode))
	}
	return os.NewFile(uintptr(fd), path), nil
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return fmt.Sprintf("mode %#o", mode&unix.S_IFMT)
}
