// Command image writes an OCI image archive of a program built on this
// machine, with no Docker engine: `make image` runs it for nodeguard, and the
// node e2e harness for its pause image.
//
//	go run ./hack/image -binary bin/image/nodeguard -o bin/nodeguard-image.tar -ref docker.io/nodeguard/nodeguard:dev
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/nodeguard/nodeguard/internal/imagebuild"
)

func main() {
	binary := flag.String("binary", "", "the program to put in the image")
	out := flag.String("o", "", "the OCI archive to write")
	ref := flag.String("ref", "", "the image's name, e.g. docker.io/nodeguard/nodeguard:dev")
	pause := flag.Bool("pause", false, "make the pause image (entrypoint /pause) instead of nodeguard's")
	version := flag.String("version", "", "the org.opencontainers.image.version label")
	revision := flag.String("revision", "", "the org.opencontainers.image.revision label")
	flag.Parse()
	if *binary == "" || *out == "" || *ref == "" {
		fmt.Fprintln(os.Stderr, "image: -binary, -o and -ref are required")
		os.Exit(2)
	}
	spec := imagebuild.Nodeguard
	if *pause {
		spec = imagebuild.Pause
	}
	spec.Labels = imagebuild.Labels(spec, *version, *revision)
	if err := write(spec, *binary, *out, *ref); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func write(spec imagebuild.Spec, binary, out, ref string) error {
	files, err := imagebuild.Write(spec, binary, out, ref)
	if err != nil {
		return err
	}
	info, err := os.Stat(out)
	if err != nil {
		return err
	}
	fmt.Printf("image: wrote %s (%s, %d files, %.1f MiB)\n", out, ref, files, float64(info.Size())/(1<<20))
	return nil
}
