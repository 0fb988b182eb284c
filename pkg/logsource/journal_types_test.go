package logsource

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSystemJournalReadable(t *testing.T) {
	const mid = "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name string
		// make lays out the two stores under root.
		make    func(t *testing.T, run, persistent string)
		wantErr string
	}{
		{name: "no journal at all", make: func(t *testing.T, run, persistent string) {}},
		{name: "empty stores", make: func(t *testing.T, run, persistent string) {
			mkdir(t, filepath.Join(run, mid))
			mkdir(t, persistent)
		}},
		{name: "a readable file in the volatile store", make: func(t *testing.T, run, persistent string) {
			write(t, filepath.Join(run, mid, "system.journal"))
		}},
		{name: "only the persistent store readable", make: func(t *testing.T, run, persistent string) {
			dangling(t, filepath.Join(run, mid, "system.journal"))
			write(t, filepath.Join(persistent, mid, "system@0001.journal"))
		}},
		{name: "files, none of which opens", make: func(t *testing.T, run, persistent string) {
			dangling(t, filepath.Join(run, mid, "system.journal"))
			dangling(t, filepath.Join(persistent, mid, "user-1000.journal"))
		}, wantErr: "no journal file under"},
		{name: "files elsewhere than a store or a machine's directory do not count", make: func(t *testing.T, run, persistent string) {
			write(t, filepath.Join(run, mid, "deeper", "system.journal"))
			dangling(t, filepath.Join(run, mid, "system.journal"))
		}, wantErr: "system.journal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			run, persistent := filepath.Join(root, "run"), filepath.Join(root, "var")
			tt.make(t, run, persistent)
			err := systemJournalReadable([]string{run, persistent})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("got %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error saying %q", err, tt.wantErr)
			}
		})
	}
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path string) {
	t.Helper()
	mkdir(t, filepath.Dir(path))
	if err := os.WriteFile(path, []byte("LPKSHHRH"), 0o640); err != nil {
		t.Fatal(err)
	}
}

// dangling is a journal file that cannot be opened, as one of root's is
// for an agent without CAP_DAC_OVERRIDE (which a root test cannot drop).
func dangling(t *testing.T, path string) {
	t.Helper()
	mkdir(t, filepath.Dir(path))
	if err := os.Symlink(filepath.Join(filepath.Dir(path), "gone"), path); err != nil {
		t.Fatal(err)
	}
}
