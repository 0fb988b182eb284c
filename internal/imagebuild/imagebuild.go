// Package imagebuild makes container images from files on this machine,
// with no Docker engine and no base image to pull: nodeguard's own image
// (`make image`) and the pause image the test harnesses (the node e2e
// harness, testcontainerd) tag as containerd's sandbox image. go-containerregistry writes the manifest,
// config and OCI layout, so that nothing here hand-writes an image format;
// the one layer's content is an ordinary tar of the files the image needs.
package imagebuild

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Nodeguard describes nodeguard's image; the Dockerfile must describe the
// same one (a test compares them).
var Nodeguard = Spec{
	Binary:     "/usr/bin/nodeguard",
	Entrypoint: []string{"/usr/bin/nodeguard"},
	// Root, with no capability (the DaemonSet drops them all): the agent
	// reads root-owned host files, the journal, /var/lib/kubelet and the
	// CRI socket, which no other user may open on a stock node.
	User: "0:0",
	// go-systemd's sdjournal loads libsystemd with dlopen, so ldd of the
	// binary does not name it.
	Dlopened: []string{"libsystemd.so.0"},
}

// Spec is what goes into an image.
type Spec struct {
	// Binary is where the program sits in the image.
	Binary     string
	Entrypoint []string
	User       string
	// Dlopened are shared libraries the program opens at run time, looked
	// up in the library directories ldd reports; their own dependencies
	// come too.
	Dlopened []string
	Labels   map[string]string
}

// File is one file of the image's layer.
type File struct {
	// Path inside the image, absolute.
	Path string
	// Source on this machine.
	Source string
	Mode   fs.FileMode
}

// Files lists what an image of the program at binary needs: the program
// and every shared library it loads, by the paths the dynamic loader looks
// them up at. A static program needs nothing else.
func (s Spec) Files(binary string) ([]File, error) {
	files := []File{{Path: s.Binary, Source: binary, Mode: 0o755}}
	libs, err := SharedLibraries(binary)
	if err != nil {
		return nil, err
	}
	for _, name := range s.Dlopened {
		lib, err := findLibrary(name, libs)
		if err != nil {
			return nil, fmt.Errorf("finding %s, which %s opens at run time: %w", name, binary, err)
		}
		more, err := SharedLibraries(lib)
		if err != nil {
			return nil, err
		}
		libs = append(libs, lib)
		libs = append(libs, more...)
	}
	seen := map[string]bool{}
	for _, lib := range libs {
		if seen[lib] {
			continue
		}
		seen[lib] = true
		files = append(files, File{Path: lib, Source: lib, Mode: 0o755})
	}
	return files, nil
}

var lddLine = regexp.MustCompile(`^\s*(?:\S+ => )?(/\S+) \(0x[0-9a-f]+\)$`)

// SharedLibraries returns the absolute paths ldd resolves for file's
// shared libraries, the dynamic loader included; none for a static file.
func SharedLibraries(file string) ([]string, error) {
	out, err := exec.Command("ldd", file).CombinedOutput()
	if bytes.Contains(out, []byte("not a dynamic executable")) || bytes.Contains(out, []byte("statically linked")) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", file, err, bytes.TrimSpace(out))
	}
	var libs []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "not found") {
			return nil, fmt.Errorf("ldd %s: a library is missing: %s", file, strings.TrimSpace(line))
		}
		if m := lddLine.FindStringSubmatch(line); m != nil {
			libs = append(libs, m[1])
		}
	}
	return libs, nil
}

func findLibrary(name string, near []string) (string, error) {
	dirs := []string{}
	for _, lib := range near {
		dirs = append(dirs, filepath.Dir(lib))
	}
	dirs = append(dirs, "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib")
	for _, dir := range dirs {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("not in %s", strings.Join(dirs, ", "))
}

// Image makes the image: one layer holding files, and spec's entrypoint,
// user and labels. Times are zero, so the same files make the same image.
func Image(spec Spec, files []File) (v1.Image, error) {
	var buf bytes.Buffer
	if err := writeLayer(&buf, files); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("making the layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.AppendLayers(img, layer)
	if err != nil {
		return nil, fmt.Errorf("adding the layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.User = spec.User
	cf.Config.Labels = spec.Labels
	cf.Config.WorkingDir = "/"
	return mutate.ConfigFile(img, cf)
}

// writeLayer writes files, and the directories above them, as a tar.
func writeLayer(w io.Writer, files []File) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	var names []string
	for _, f := range files {
		for d := path.Dir(f.Path); d != "/" && d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)
	for _, d := range names {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f.Source)
		if err != nil {
			return fmt.Errorf("reading %s for the image's %s: %w", f.Source, f.Path, err)
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.Path, "/"), Mode: int64(f.Mode.Perm()), Size: int64(len(b)), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	return tw.Close()
}

// WriteArchive writes img as an OCI image layout in a tar at path, named
// ref (e.g. docker.io/library/nodeguard:dev) for `ctr images import` and
// the OCI ref.name for other tools.
func WriteArchive(path, ref string, img v1.Image) error {
	tag := ref
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		tag = ref[i+1:]
	}
	dir, err := os.MkdirTemp("", "nodeguard-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("writing the OCI layout: %w", err)
	}
	if err := lp.AppendImage(img, layout.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}), layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          ref,
		"org.opencontainers.image.ref.name": tag,
	})); err != nil {
		return fmt.Errorf("writing the image into the OCI layout: %w", err)
	}
	tmp := path + ".tmp"
	out, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := tarDir(out, dir); err != nil {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

func tarDir(w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		hdr.ModTime, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = hdr.ModTime.Truncate(0).UTC(), 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// Write makes the image of the program at binary and writes it as an OCI
// archive at out named ref; it returns how many files the image holds.
func Write(spec Spec, binary, out, ref string) (int, error) {
	files, err := spec.Files(binary)
	if err != nil {
		return 0, err
	}
	img, err := Image(spec, files)
	if err != nil {
		return 0, err
	}
	return len(files), WriteArchive(out, ref, img)
}

// Pause describes the test harnesses' pause image (hack/pause), a static
// program.
var Pause = Spec{Binary: "/pause", Entrypoint: []string{"/pause"}, User: "65535:65535"}

// TestPod describes the tests' workload image (hack/testpod), a static
// program whose first argument says what it does.
var TestPod = Spec{Binary: "/testpod", Entrypoint: []string{"/testpod"}}

// BuildPause builds hack/pause and writes its image, named ref, as an OCI
// archive in dir; it returns the archive's path.
func BuildPause(ctx context.Context, dir, ref string) (string, error) {
	return BuildProgram(ctx, dir, Pause, "./hack/pause", ref)
}

// BuildProgram builds pkg, a main package of nodeguard's module (the one
// the go command finds from the working directory) named from the module's
// root, as a static program, and writes the image spec describes of it,
// named ref, as an OCI archive in dir; it returns the archive's path.
func BuildProgram(ctx context.Context, dir string, spec Spec, pkg, ref string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside nodeguard's module")
	}
	name := path.Base(spec.Binary)
	bin := filepath.Join(dir, name)
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, pkg)
	build.Dir = filepath.Dir(mod)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s: %w\n%s", pkg, err, out)
	}
	archive := filepath.Join(dir, name+".tar")
	if _, err := Write(spec, bin, archive, ref); err != nil {
		return "", fmt.Errorf("making the image of %s: %w", pkg, err)
	}
	return archive, nil
}

// Labels returns the OCI labels for spec's image at version and revision.
func Labels(spec Spec, version, revision string) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":  path.Base(spec.Binary),
		"org.opencontainers.image.source": "https://github.com/nodeguard/nodeguard",
	}
	if version != "" {
		l["org.opencontainers.image.version"] = version
	}
	if revision != "" {
		l["org.opencontainers.image.revision"] = revision
	}
	return l
}
