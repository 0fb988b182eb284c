package evidence

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"
)

// BundleFiles are the files of a support bundle besides the evidence
// directories (which go under BundleEvidence): the docs list them from
// here, and a test holds the docs, this list and a real bundle in step.
var BundleFiles = []string{"version.txt", "config.yaml", "check.txt", "check.json"}

// BundleEvidence is the folder of the bundle the evidence directories go
// in, each with the files of Files that it holds.
const BundleEvidence = "evidence/"

// Bundle is what a support bundle holds besides the evidence directories.
type Bundle struct {
	// Version says which nodeguard this is (`nodeguard version`).
	Version string
	// Config is the effective configuration, as YAML.
	Config []byte
	// CheckText and CheckJSON are what `nodeguard check` prints, in its
	// text and JSON forms.
	CheckText, CheckJSON []byte
	// EvidenceDir is where the captures are (stateDir/evidence).
	EvidenceDir string
	Now         time.Time
}

// Write writes the bundle to w as a tar.gz: BundleFiles, then every
// captured directory under BundleEvidence, oldest first. Evidence being
// written meanwhile (a hidden directory) is left out; a directory removed
// meanwhile (pruned) is skipped.
func (b Bundle) Write(w io.Writer) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	for _, name := range BundleFiles {
		data := map[string][]byte{
			"version.txt": []byte(b.Version), "config.yaml": b.Config, "check.txt": b.CheckText, "check.json": b.CheckJSON,
		}[name]
		if err := addFile(tw, name, data, b.Now); err != nil {
			return err
		}
	}
	dirs, err := List(b.EvidenceDir)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		files, err := os.ReadDir(d.Path)
		if err != nil {
			continue // pruned since the listing
		}
		for _, f := range files {
			if !f.Type().IsRegular() {
				continue
			}
			data, err := os.ReadFile(filepath.Join(d.Path, f.Name()))
			if err != nil {
				continue
			}
			info, _ := f.Info()
			mod := b.Now
			if info != nil {
				mod = info.ModTime()
			}
			if err := addFile(tw, path.Join(BundleEvidence, filepath.Base(d.Path), f.Name()), data, mod); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("writing the bundle: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("writing the bundle: %w", err)
	}
	return nil
}

func addFile(tw *tar.Writer, name string, data []byte, mod time.Time) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(data)), ModTime: mod, Typeflag: tar.TypeReg}); err != nil {
		return fmt.Errorf("writing %s into the bundle: %w", name, err)
	}
	if _, err := tw.Write(data); err != nil {
		return fmt.Errorf("writing %s into the bundle: %w", name, err)
	}
	return nil
}
