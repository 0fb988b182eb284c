package imagebuild

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestDockerfileDescribesTheSameImage keeps the Dockerfile, for users with
// Docker, and `make image` in step: the final stage's entrypoint, user and
// binary path are Nodeguard's.
func TestDockerfileDescribesTheSameImage(t *testing.T) {
	f, err := os.Open("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var entrypoint []string
	var user, binary string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		word, rest, _ := strings.Cut(line, " ")
		switch strings.ToUpper(word) {
		case "FROM": // a new stage: only the last one is the image
			entrypoint, user, binary = nil, "", ""
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &entrypoint); err != nil {
				t.Fatalf("Dockerfile: ENTRYPOINT %s is not the exec form: %v", rest, err)
			}
		case "USER":
			user = strings.TrimSpace(rest)
		case "COPY":
			fields := strings.Fields(rest)
			binary = fields[len(fields)-1]
		}
	}
	if !reflect.DeepEqual(entrypoint, Nodeguard.Entrypoint) {
		t.Errorf("Dockerfile ENTRYPOINT %q, make image %q", entrypoint, Nodeguard.Entrypoint)
	}
	if user != Nodeguard.User {
		t.Errorf("Dockerfile USER %q, make image %q", user, Nodeguard.User)
	}
	if binary != Nodeguard.Binary {
		t.Errorf("Dockerfile puts the binary at %q, make image at %q", binary, Nodeguard.Binary)
	}
}

// TestImageOfADynamicProgram builds an image of /bin/true, which loads
// libc: the image has the program, its libraries and the loader, and the
// spec's config.
func TestImageOfADynamicProgram(t *testing.T) {
	if _, err := os.Stat("/bin/true"); err != nil {
		t.Skip("no /bin/true")
	}
	spec := Spec{Binary: "/usr/bin/true", Entrypoint: []string{"/usr/bin/true"}, User: "65534:65534"}
	spec.Labels = Labels(spec, "v1.2.3", "abc")
	files, err := spec.Files("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	img, err := Image(spec, files)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cf.Config.Entrypoint, spec.Entrypoint) || cf.Config.User != spec.User ||
		cf.Config.Labels["org.opencontainers.image.version"] != "v1.2.3" || cf.Config.Labels["org.opencontainers.image.revision"] != "abc" {
		t.Errorf("config %+v does not carry the spec %+v", cf.Config, spec)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %v, %v", layers, err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]bool{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got["/"+strings.TrimSuffix(h.Name, "/")] = true
	}
	var sawLibc, sawLoader bool
	for name := range got {
		sawLibc = sawLibc || strings.HasSuffix(name, "/libc.so.6")
		sawLoader = sawLoader || strings.HasPrefix(filepath.Base(name), "ld-linux")
	}
	if !got["/usr/bin/true"] || !sawLibc || !sawLoader {
		t.Errorf("layer lacks the program, libc or the loader: %v", got)
	}
	archive := filepath.Join(t.TempDir(), "img.tar")
	if err := WriteArchive(archive, "example.com/true:test", img); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(archive)
	if !strings.Contains(string(b), "io.containerd.image.name") || !strings.Contains(string(b), "example.com/true:test") {
		t.Errorf("the archive's index does not name the image for ctr")
	}
}
