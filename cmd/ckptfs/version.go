package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/ckptfs/ckptfs/dedup"
	"github.com/ckptfs/ckptfs/image"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3"); else
// the module version from the build info, else "devel".
var version = ""

// versionInfo is what `ckptfs version` prints (and its --json document).
type versionInfo struct {
	Version       string `json:"version"`
	Commit        string `json:"commit,omitempty"`      // vcs.revision of the build
	CommitTime    string `json:"commit_time,omitempty"` // vcs.time
	Modified      bool   `json:"modified,omitempty"`    // built from a dirty tree
	GoVersion     string `json:"go_version"`
	Platform      string `json:"platform"`
	StoreFormat   int    `json:"store_format"`   // newest store format read and written
	TreeFormat    int    `json:"tree_format"`    // tree (image) format written
	StoreProtocol int    `json:"store_protocol"` // version of the store socket protocol
}

func buildVersion() versionInfo {
	v := versionInfo{Version: version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		StoreFormat: dedup.StoreFormat, TreeFormat: image.FormatVersion, StoreProtocol: dedup.ProtocolVersion}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = s.Value
			case "vcs.time":
				v.CommitTime = s.Value
			case "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if v.Version == "" {
		v.Version = "devel"
	}
	return v
}

func (v versionInfo) String() string {
	s := "ckptfs " + v.Version
	if v.Commit != "" {
		c := v.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		s += " (" + c
		if v.Modified {
			s += "-dirty"
		}
		if v.CommitTime != "" {
			s += " " + v.CommitTime
		}
		s += ")"
	}
	return s + fmt.Sprintf("\n%s %s, store format %d, tree format %d, store protocol %d\n",
		v.GoVersion, v.Platform, v.StoreFormat, v.TreeFormat, v.StoreProtocol)
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version [--json]",
		Short: "Print the version, commit, Go version and format versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := buildVersion()
			if globals.json {
				return printJSON(v)
			}
			fmt.Print(v)
			return nil
		},
	}
}

func init() {
	rootCmd.AddCommand(versionCmd())
	var showVersion bool
	rootCmd.Flags().BoolVar(&showVersion, "version", false, "print the version (as 'ckptfs version')")
	rootCmd.RunE = func(cmd *cobra.Command, args []string) error {
		if showVersion {
			return versionCmd().RunE(cmd, args)
		}
		return cmd.Help()
	}
}
