package dedup

import (
	"context"
	"errors"
	"time"
)

// Objects is the seam between a remote store (remote.go) and the service
// that keeps its objects: put a whole object, get it or a range of it,
// list names under a prefix, delete. Names are relative to the store (the
// implementation adds its bucket and prefix). Objects are written whole
// and never changed in place, so no operation needs more than S3's
// read-after-write consistency. remote_s3.go implements it on S3.
type Objects interface {
	Put(ctx context.Context, name string, data []byte) error
	// Get returns the whole object; an absent one is an error wrapping
	// ErrObjectMissing.
	Get(ctx context.Context, name string) ([]byte, error)
	// GetRange returns n bytes of the object from off.
	GetRange(ctx context.Context, name string, off, n int64) ([]byte, error)
	// List returns the objects whose names start with prefix.
	List(ctx context.Context, prefix string) ([]ObjectInfo, error)
	Delete(ctx context.Context, name string) error
	// String names the store for messages (s3://BUCKET/PREFIX).
	String() string
}

// ObjectInfo is one object of a listing.
type ObjectInfo struct {
	Name    string // relative to the store
	Size    int64
	ModTime time.Time
}

// ErrObjectMissing says an object does not exist.
var ErrObjectMissing = errors.New("object missing")

// ErrRemoteAccess says the object service refused the credentials or the
// request (exit status: error, with the service's reason).
var ErrRemoteAccess = errors.New("access denied")
