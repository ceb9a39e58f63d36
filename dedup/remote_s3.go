package dedup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says how to reach an S3-compatible service. Empty fields come
// from the environment (S3ConfigFromEnv).
type S3Config struct {
	Endpoint  string // URL (http://host:port) or host:port (https); AWS_ENDPOINT_URL
	Region    string // AWS_REGION, AWS_DEFAULT_REGION; default us-east-1
	AccessKey string // AWS_ACCESS_KEY_ID
	SecretKey string // AWS_SECRET_ACCESS_KEY
	Token     string // AWS_SESSION_TOKEN
}

// S3ConfigFromEnv fills the empty fields of c from the AWS_* variables.
func S3ConfigFromEnv(c S3Config) S3Config {
	set := func(dst *string, names ...string) {
		for _, n := range names {
			if *dst == "" {
				*dst = os.Getenv(n)
			}
		}
	}
	set(&c.Endpoint, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
	set(&c.Region, "AWS_REGION", "AWS_DEFAULT_REGION")
	set(&c.AccessKey, "AWS_ACCESS_KEY_ID")
	set(&c.SecretKey, "AWS_SECRET_ACCESS_KEY")
	set(&c.Token, "AWS_SESSION_TOKEN")
	if c.Endpoint == "" {
		c.Endpoint = "https://s3.amazonaws.com"
	}
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	return c
}

// IsRemote says whether a -s argument names a remote store (s3://…).
func IsRemote(spec string) bool { return strings.HasPrefix(spec, "s3://") }

// ParseS3URL splits s3://BUCKET/PREFIX.
func ParseS3URL(spec string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(spec, "s3://")
	if !ok {
		return "", "", fmt.Errorf("%q is not an s3:// URL", spec)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	prefix = strings.Trim(prefix, "/")
	if bucket == "" {
		return "", "", fmt.Errorf("%q names no bucket (s3://BUCKET/PREFIX)", spec)
	}
	for _, part := range strings.Split(prefix, "/") {
		if prefix != "" && (part == "" || part == "." || part == "..") {
			return "", "", fmt.Errorf("%q: bad prefix", spec)
		}
	}
	return bucket, prefix, nil
}

// s3Objects keeps a store's objects under PREFIX/ in a bucket.
type s3Objects struct {
	c              *minio.Client
	bucket, prefix string
	endpoint       string
}

// NewS3Objects returns the objects of the store s3://bucket/prefix. It
// does not contact the service.
func NewS3Objects(spec string, cfg S3Config) (Objects, error) {
	bucket, prefix, err := ParseS3URL(spec)
	if err != nil {
		return nil, err
	}
	cfg = S3ConfigFromEnv(cfg)
	host, secure := cfg.Endpoint, true
	if u, err := url.Parse(cfg.Endpoint); err == nil && u.Host != "" {
		host, secure = u.Host, u.Scheme != "http"
	}
	c, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.Token),
		Secure:       secure,
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   2,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 endpoint %s: %w", cfg.Endpoint, err)
	}
	return &s3Objects{c: c, bucket: bucket, prefix: prefix, endpoint: cfg.Endpoint}, nil
}

func (o *s3Objects) String() string {
	if o.prefix == "" {
		return "s3://" + o.bucket
	}
	return "s3://" + o.bucket + "/" + o.prefix
}

func (o *s3Objects) key(name string) string {
	if o.prefix == "" {
		return name
	}
	return o.prefix + "/" + name
}

// wrap gives an error of the service a clear message and the error the
// callers test for.
func (o *s3Objects) wrap(op, name string, err error) error {
	if err == nil {
		return nil
	}
	resp := minio.ToErrorResponse(err)
	where := fmt.Sprintf("%s %s/%s", op, o, name)
	switch resp.Code {
	case "NoSuchKey":
		return fmt.Errorf("%s: %w", where, ErrObjectMissing)
	case "NoSuchBucket":
		return fmt.Errorf("%s: bucket %s does not exist: %w", where, o.bucket, ErrNotStore)
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken":
		return fmt.Errorf("%s: %w by %s (%s: %s; check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
			where, ErrRemoteAccess, o.endpoint, resp.Code, resp.Message)
	}
	if resp.Code == "" && resp.StatusCode == 0 {
		return fmt.Errorf("%s: cannot reach %s: %w", where, o.endpoint, err)
	}
	return fmt.Errorf("%s: %w", where, err)
}

func (o *s3Objects) Put(ctx context.Context, name string, data []byte) error {
	_, err := o.c.PutObject(ctx, o.bucket, o.key(name), bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true})
	return o.wrap("put", name, err)
}

func (o *s3Objects) Get(ctx context.Context, name string) ([]byte, error) {
	obj, err := o.c.GetObject(ctx, o.bucket, o.key(name), minio.GetObjectOptions{})
	if err != nil {
		return nil, o.wrap("get", name, err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	return b, o.wrap("get", name, err)
}

func (o *s3Objects) GetRange(ctx context.Context, name string, off, n int64) ([]byte, error) {
	if n <= 0 {
		return nil, nil
	}
	var opts minio.GetObjectOptions
	if err := opts.SetRange(off, off+n-1); err != nil {
		return nil, err
	}
	obj, err := o.c.GetObject(ctx, o.bucket, o.key(name), opts)
	if err != nil {
		return nil, o.wrap("get", name, err)
	}
	defer obj.Close()
	b, err := io.ReadAll(obj)
	if err != nil {
		return nil, o.wrap("get", name, err)
	}
	if int64(len(b)) != n {
		return nil, fmt.Errorf("get %s/%s: %d bytes at %d: %w", o, name, len(b), off, io.ErrUnexpectedEOF)
	}
	return b, nil
}

func (o *s3Objects) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	var out []ObjectInfo
	base := o.key("")
	for info := range o.c.ListObjects(ctx, o.bucket, minio.ListObjectsOptions{Prefix: o.key(prefix), Recursive: true}) {
		if info.Err != nil {
			return nil, o.wrap("list", prefix, info.Err)
		}
		name, ok := strings.CutPrefix(info.Key, base)
		if !ok {
			continue
		}
		out = append(out, ObjectInfo{Name: name, Size: info.Size, ModTime: info.LastModified})
	}
	return out, nil
}

func (o *s3Objects) Delete(ctx context.Context, name string) error {
	err := o.c.RemoveObject(ctx, o.bucket, o.key(name), minio.RemoveObjectOptions{})
	if err != nil && errors.Is(o.wrap("delete", name, err), ErrObjectMissing) {
		return nil
	}
	return o.wrap("delete", name, err)
}
