package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCgroupMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name     string
		self     string            // /proc/self/cgroup
		files    map[string]string // under the mount root
		want     uint64
		wantFrom string
		wantErr  string
	}{
		{
			name:     "v1, the container's own limit",
			self:     "5:cpu,cpuacct:/kubepods/podA/c1\n4:memory:/kubepods/podA/c1\n0::/\n",
			files:    map[string]string{"memory/kubepods/podA/c1/memory.limit_in_bytes": "134217728\n", "memory/kubepods/podA/memory.limit_in_bytes": "134217728\n", "memory/memory.limit_in_bytes": "9223372036854771712\n"},
			want:     128 * mib,
			wantFrom: "memory/kubepods/podA/c1/memory.limit_in_bytes",
		},
		{
			name:     "v1, only the pod's cgroup limited",
			self:     "4:memory:/kubepods/podA/c1\n",
			files:    map[string]string{"memory/kubepods/podA/c1/memory.limit_in_bytes": "9223372036854771712\n", "memory/kubepods/podA/memory.limit_in_bytes": "67108864\n"},
			want:     64 * mib,
			wantFrom: "memory/kubepods/podA/memory.limit_in_bytes",
		},
		{
			name:  "v1, no limit anywhere",
			self:  "4:memory:/system.slice/x\n",
			files: map[string]string{"memory/system.slice/x/memory.limit_in_bytes": "9223372036854771712\n", "memory/memory.limit_in_bytes": "9223372036854771712\n"},
		},
		{
			name:     "v2, own max under a limited parent",
			self:     "0::/kubepods.slice/pod.slice/cri-containerd-1.scope\n",
			files:    map[string]string{"kubepods.slice/pod.slice/cri-containerd-1.scope/memory.max": "max\n", "kubepods.slice/pod.slice/memory.max": "268435456\n", "kubepods.slice/memory.max": "max\n"},
			want:     256 * mib,
			wantFrom: "kubepods.slice/pod.slice/memory.max",
		},
		{
			name:     "v2 in its own cgroup namespace: the root is the container",
			self:     "0::/\n",
			files:    map[string]string{"memory.max": "104857600\n"},
			want:     100 * mib,
			wantFrom: "memory.max",
		},
		{
			name:     "the host's path, not mounted in the container: the mount's root is the container",
			self:     "4:memory:/kubepods/podA/c1\n",
			files:    map[string]string{"memory/memory.limit_in_bytes": "134217728\n"},
			want:     128 * mib,
			wantFrom: "memory/memory.limit_in_bytes",
		},
		{
			name:     "hybrid: v1's memory controller wins over the v2 hierarchy",
			self:     "4:memory:/a\n0::/a\n",
			files:    map[string]string{"memory/a/memory.limit_in_bytes": "33554432\n", "a/memory.max": "16777216\n"},
			want:     32 * mib,
			wantFrom: "memory/a/memory.limit_in_bytes",
		},
		{
			name:     "a path above the namespace's root: only the mount's root is read",
			self:     "0::/..\n",
			files:    map[string]string{"memory.max": "104857600\n", "../memory.max": "1048576\n"},
			want:     100 * mib,
			wantFrom: "memory.max",
		},
		{
			name:    "a malformed /proc/self/cgroup line",
			self:    "0::/\nnonsense\n",
			wantErr: "cgroup line 2: want hierarchy:controllers:path",
		},
		{
			name:    "a limit that is not a number",
			self:    "0::/a\n",
			files:   map[string]string{"a/memory.max": "lots\n"},
			wantErr: `a/memory.max line 1: the memory limit "lots" is not a number of bytes or max`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "cgroup")
			self := filepath.Join(dir, "self-cgroup")
			if err := os.WriteFile(self, []byte(tt.self), 0o644); err != nil {
				t.Fatal(err)
			}
			for name, content := range tt.files {
				path := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, from, err := cgroupMemoryLimit(self, root)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantFrom := ""
			if tt.wantFrom != "" {
				wantFrom = filepath.Join(root, tt.wantFrom)
			}
			if got != tt.want || from != wantFrom {
				t.Errorf("limit %d from %q, want %d from %q", got, from, tt.want, wantFrom)
			}
		})
	}
}
