package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/fs"
)

// s3Flags are the global flags of remote stores (s3://BUCKET/PREFIX);
// what they leave empty comes from AWS_ENDPOINT_URL, AWS_REGION and the
// credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
// AWS_SESSION_TOKEN (never from flags: they would show in ps).
var s3Flags dedup.S3Config

func init() {
	pf := rootCmd.PersistentFlags()
	pf.StringVar(&s3Flags.Endpoint, "s3-endpoint", "", "S3 endpoint URL of s3:// stores (default $AWS_ENDPOINT_URL, else AWS)")
	pf.StringVar(&s3Flags.Region, "s3-region", "", "S3 region of s3:// stores (default $AWS_REGION, else us-east-1)")
	cobra.OnInitialize(exportS3Flags)
}

// exportS3Flags puts the S3 flags into the environment, so that the
// processes ckptfs starts of itself (dump's tracer) reach the same service.
func exportS3Flags() {
	if s3Flags.Endpoint != "" {
		os.Setenv("AWS_ENDPOINT_URL", s3Flags.Endpoint)
	}
	if s3Flags.Region != "" {
		os.Setenv("AWS_REGION", s3Flags.Region)
	}
}

// openRemoteRepo opens the remote store spec (s3://BUCKET/PREFIX),
// creating it if create.
func openRemoteRepo(ctx context.Context, spec string, create bool) (*dedup.RemoteStore, error) {
	obj, err := dedup.NewS3Objects(spec, s3Flags)
	if err != nil {
		return nil, usageErr(err)
	}
	return dedup.OpenRemote(ctx, obj, create)
}

// openAnyRepo opens a local store (through its mount if mounted) or a
// remote one. Only a remote store is created if missing and create.
func openAnyRepo(spec string, create bool) (dedup.Repo, error) {
	if dedup.IsRemote(spec) {
		return openRemoteRepo(context.Background(), spec, create)
	}
	if create {
		return dedup.OpenRepo(spec)
	}
	return dedup.OpenExistingRepo(spec)
}

// mountStore mounts a local store (fs.Mount: it serves the store on its
// socket) or a remote one (fs.MountRepo: pages are fetched on demand).
// closeStore releases a remote store once the mount is gone.
func mountStore(store, mnt string, opts fs.Options) (srv *fs.Server, closeStore func(), err error) {
	if !dedup.IsRemote(store) {
		srv, err := fs.Mount(store, mnt, opts)
		return srv, func() {}, err
	}
	r, err := openRemoteRepo(context.Background(), store, false)
	if err != nil {
		return nil, nil, err
	}
	srv, err = fs.MountRepo(r, mnt, opts)
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	return srv, func() { r.Close() }, nil
}

// openDumpRepo opens dump's store: a local one (waiting while another
// process has it to itself) or a remote one, created if missing.
func openDumpRepo(ctx context.Context, spec string, notice func(owner string)) (dedup.Repo, error) {
	if dedup.IsRemote(spec) {
		return openRemoteRepo(ctx, spec, true)
	}
	return dedup.WaitRepo(ctx, spec, notice)
}

// checkRemoteDump refuses for a remote store the dump flags that keep a
// tracker in the store directory between dumps (--track, --every,
// --pre-copy without --kill): dump those into a local store and copy.
// --pre-copy --kill (migrate --to) tracks within the one dump process.
func checkRemoteDump(f *dumpFlags) error {
	if dedup.IsRemote(f.store) && (f.track || f.every > 0 || f.preCopy && !f.kill) {
		return fmt.Errorf("--track, --every and --pre-copy without --kill need a local store (dump into one, then 'ckptfs copy' to %s)", f.store)
	}
	return nil
}

// remoteTrackDir is where the tracking of a dump into a remote store
// looks for a tracker: a local directory of its own per store (none is
// ever left there: a remote pre-copy kills the tree).
func remoteTrackDir(spec string) string {
	sum := sha256.Sum256([]byte(spec))
	return filepath.Join(os.TempDir(), "ckptfs-track-"+hex.EncodeToString(sum[:8]))
}
