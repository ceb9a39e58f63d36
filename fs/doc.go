// Package fs serves a store of checkpoints as a read-only FUSE file system
// (go-fuse):
//
//	MNT/latest -> <id>            the newest checkpoint
//	MNT/by-name/<name> -> ../<id>
//	MNT/<id>/...                  the tree image.Render builds for the checkpoint
//	MNT/cores/<id>/<pid>/core     the tasks' core files, moved out of <id>/ (cores.go)
//
// Nodes of a rendered tree are served generically: *image.Dir is a
// directory (0555), *image.Symlink a symlink, an image.File a regular file
// (0444; 0400 when image.Private: memory and secrets) read through its
// ReadAt, and an image.SparseFile also answers
// lseek SEEK_DATA/SEEK_HOLE. A checkpoint is loaded and rendered on the
// first lookup of its id and kept.
//
// Caching. Nothing below <id> ever changes: entries, attributes and
// directory listings get long kernel timeouts and stable inode numbers
// (seq<<32 + depth-first index, seq numbering the checkpoints of this
// mount), and file pages stay in the kernel's page cache across opens
// (files: zero-message opens, FUSE_NO_OPEN_SUPPORT, which keep the cache
// and spare OPEN, FLUSH and RELEASE round trips; directories:
// FOPEN_KEEP_CACHE, FOPEN_CACHE_DIR). The top level changes: its entries
// live for a second, and Server.Notify (called by the store's server after
// every commit, rm and gc of another process) refreshes the list and
// invalidates the kernel's entries at once, so a new dump is visible when
// `ckptfs dump` returns.
//
// Reads. Requests go up to 1 MiB (max_read, max_pages) and the mount's
// readahead is raised to 4 MiB, so a sequential read of a vma's pages file
// reaches the store as a few large requests in flight. A pages file of
// 8 MiB or more read in order is read ahead of them in chunks of 4 MiB
// (pages.go: from a store with O_DIRECT into huge pages, every page
// hash-checked), and requests are answered from the chunks; other reads
// are filled in place in go-fuse's buffer, one ReadPages call per run of
// saved pages when the source batches, else page by page.
//
// The mount's source is "ckptfs:<store>" (SourcePrefix) when it serves a
// local store: the restorer of a tree below the mount reads page data from
// that store's socket instead of the pages files (restorer/pagesource.go).
//
// Mount owns the store (Badger's lock) while mounted and serves it to other
// ckptfs processes on the store's unix socket.
package fs
