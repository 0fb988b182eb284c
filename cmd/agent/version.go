package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

// Set at build time (make build and make image do):
//
//	-ldflags "-X main.version=v1.2.3 -X main.revision=<commit> -X main.buildDate=<RFC 3339>"
//
// Unset, they come from what the go command stamped into the binary (the
// module's version, the VCS revision and commit time), else "unknown".
var version, revision, buildDate string

// build says which nodeguard this is.
type build struct {
	Version, Revision, GoVersion, Date string
}

func currentBuild() build {
	b := build{Version: version, Revision: revision, GoVersion: runtime.Version(), Date: buildDate}
	if info, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			b.Version = info.Main.Version
		}
		modified := false
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision" && b.Revision == "":
				b.Revision = s.Value
			case s.Key == "vcs.time" && b.Date == "":
				b.Date = s.Value
			case s.Key == "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if modified && revision == "" && b.Revision != "" {
			b.Revision += "-dirty"
		}
	}
	for _, f := range []*string{&b.Version, &b.Revision, &b.Date} {
		if *f == "" {
			*f = "unknown"
		}
	}
	return b
}

func (b build) print(w io.Writer) {
	fmt.Fprintf(w, "nodeguard %s\n  revision:   %s\n  go version: %s\n  built:      %s\n", b.Version, b.Revision, b.GoVersion, b.Date)
}

// collector is the build_info gauge every Prometheus exporter has: 1, with
// the build in its labels, so that dashboards can tell versions apart.
func (b build) collector() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "nodeguard_build_info",
		Help: "1, labelled with the version, revision and Go version nodeguard was built from.",
	}, []string{"version", "revision", "goversion"})
	g.WithLabelValues(b.Version, b.Revision, b.GoVersion).Set(1)
	return g
}

// versionUsage says what the version command and --version print.
const versionUsage = "Print the version, revision, Go version and build date"

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: versionUsage,
		Args:  cobra.NoArgs,
		Run:   func(cmd *cobra.Command, _ []string) { currentBuild().print(cmd.OutOrStdout()) },
	}
}
