// Package testnode runs a one-node Kubernetes cluster on this machine for
// end-to-end tests and the demo: etcd, kube-apiserver, kube-controller-manager
// and kube-scheduler from hack/build-test-binaries.sh, and containerd, runc and
// the CNI plugins from Debian's packages, with a real kubelet that registers
// this machine as a Node and runs pods.
//
// The machine is shared, so the node keeps its state in one directory and
// leaves nothing behind:
//   - containerd, the kubelet and journald run in a mount namespace of their
//     own in which /var/lib, /run and /var/log are that directory's, so the
//     hostPath volumes of nodeguard's DaemonSet (/var/lib/kubelet,
//     /run/containerd, /var/log/journal, ...) resolve inside it, and the
//     kubelet's mounts vanish with the namespace;
//   - pods' cgroups sit under a cgroup root named for the run, emptied and
//     removed at the end;
//   - the sysctls the kubelet changes are put back;
//   - the API server listens on an address of 127.0.0.0/8 drawn for the
//     run, which is also the `kubernetes` Service's ClusterIP, so pods reach
//     it as in a real cluster with no kube-proxy;
//   - a run that died without cleaning up (a killed test binary) is cleaned
//     up by the next Start, from the record it left under recordDir.
package testnode

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodeguard/nodeguard/internal/imagebuild"
	"github.com/nodeguard/nodeguard/internal/testcluster"
	"github.com/nodeguard/nodeguard/internal/testdns"
	"github.com/nodeguard/nodeguard/internal/testproc"
)

// PauseImage is the sandbox image containerd is told to use; Start builds
// and imports it (hack/pause), since nothing can be pulled here.
const PauseImage = "registry.k8s.io/pause:3.10"

// ErrSkip wraps every reason the node cannot run on this machine at all
// (not root, a package missing): tests skip on it and fail on anything else.
var ErrSkip = errors.New("the node e2e harness cannot run here")

// The sysctls the kubelet (setupKernelTunables) and the CNI bridge change.
var savedSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward",
}

// recordDir keeps one record per running node, for the clean-up of a run
// that died.
const recordDir = "/var/tmp/nodeguard-testnode"

// Node is a running one-node cluster.
type Node struct {
	// Name is the Node's name.
	Name string
	// Dir holds all of the node's state; Root is the part that appears as
	// /var/lib, /run and /var/log inside the node's mount namespace.
	Dir, Root string
	// Cluster is the control plane. Its admin kubeconfig and Client are the
	// test's.
	Cluster *testcluster.Cluster
	Client  kubernetes.Interface
	// CgroupRoot is the kubelet's cgroup root (e.g. /ngnode-1a2b), in
	// every hierarchy.
	CgroupRoot string
	// DNS answers for the cluster domain on the kubelet's clusterDNS
	// address, in place of CoreDNS.
	DNS *testdns.Server
	// ContainerdSocket is containerd's socket as seen from the host.
	ContainerdSocket string
	// Journald says whether a real systemd-journald runs for the node,
	// storing the kernel's messages where the DaemonSet mounts the journal.
	Journald bool
	// KubeletRelay carries every connection of the kubelet's to the API
	// server, and nobody else's: Blackhole cuts the kubelet off while the
	// node and the agent stay connected.
	KubeletRelay *Relay

	logf      func(format string, args ...any)
	holder    *exec.Cmd
	holderEnd chan struct{}
	procs     []*proc
	record    record
	kubelet   *proc
	// lock is held from Start to Stop: one node per machine at a time.
	lock *os.File
}

type proc struct {
	*testproc.Process
	name string
	log  string
}

// record is what a clean-up needs of a node whose run died.
type record struct {
	PID        int    `json:"pid"`
	Dir        string `json:"dir"`
	ClusterDir string `json:"clusterDir"`
	CgroupRoot string `json:"cgroupRoot"`
	Bridge     string `json:"bridge"`
	// MountNS names the node's mount namespace (mnt:[inode]): containerd's
	// shims outlive a killed run in it.
	MountNS string            `json:"mountNS"`
	Sysctls map[string]string `json:"sysctls"`
	// KubeletMount is the host path of the loop filesystem that holds the
	// kubelet's root dir.
	KubeletMount string `json:"kubeletMount,omitempty"`
}

// Options change the node.
type Options struct {
	// Logf receives the harness's progress and where each log is; nil is
	// silent.
	Logf func(format string, args ...any)
	// NoJournald runs no systemd-journald even where one is installed.
	NoJournald bool
}

// Start starts the cluster and waits for its Node to be Ready. On an
// error everything started is stopped again.
func Start(ctx context.Context, opts Options) (n *Node, err error) {
	if err := preflight(); err != nil {
		return nil, err
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	lock, err := lockMachine(ctx, logf)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && n == nil {
			lock.Close()
		}
	}()
	reapDeadRuns(logf)
	id := randomID()
	dir, err := os.MkdirTemp("/tmp", "ngnode-")
	if err != nil {
		return nil, fmt.Errorf("making the node's directory: %w", err)
	}
	n = &Node{
		Name:       "ngnode-" + id,
		Dir:        dir,
		Root:       filepath.Join(dir, "root"),
		CgroupRoot: "/ngnode-" + id,
		logf:       logf,
		lock:       lock,
	}
	n.ContainerdSocket = n.HostPath("/run/containerd/containerd.sock")
	n.record = record{PID: os.Getpid(), Dir: dir, CgroupRoot: n.CgroupRoot, Bridge: "ngbr" + id, Sysctls: map[string]string{}}
	for _, k := range savedSysctls {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			n.record.Sysctls[k] = strings.TrimSpace(string(b))
		}
	}
	defer func() {
		if err != nil {
			n.Stop()
			n = nil
		}
	}()
	if err := n.writeRecord(); err != nil {
		return nil, err
	}
	logf("testnode: node %s, state in %s", n.Name, dir)
	if err := n.startControlPlane(); err != nil {
		return nil, err
	}
	if err := n.mountKubeletDir(); err != nil {
		return nil, err
	}
	if err := n.startNamespace(); err != nil {
		return nil, err
	}
	if !opts.NoJournald {
		n.startJournald()
	}
	if err := n.startContainerd(ctx); err != nil {
		return nil, err
	}
	if err := n.startKubelet(); err != nil {
		return nil, err
	}
	if err := n.waitReady(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

func preflight() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root (it runs a kubelet, containerd and runc)", ErrSkip)
	}
	if _, err := testcluster.BinDir(); err != nil {
		return fmt.Errorf("%w: %v", ErrSkip, err)
	}
	bin, _ := testcluster.BinDir()
	for _, name := range []string{"kubelet", "kube-controller-manager", "kube-scheduler", "kubectl"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return fmt.Errorf("%w: %s is not in %s (run hack/build-test-binaries.sh)", ErrSkip, name, bin)
		}
	}
	for _, name := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "unshare", "ip", "mkfs.ext4", "fsfreeze"} {
		if _, err := exec.LookPath(name); err != nil {
			return fmt.Errorf("%w: %s is not installed (hack/install-test-deps.sh installs containerd, runc, util-linux, e2fsprogs and iproute2)", ErrSkip, name)
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, plugin)); err != nil {
			return fmt.Errorf("%w: the CNI plugin %s is not in %s (Debian package containernetworking-plugins)", ErrSkip, plugin, cniBinDir)
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err != nil {
		if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
			return fmt.Errorf("%w: no cgroup v1 memory hierarchy or cgroup v2 at /sys/fs/cgroup", ErrSkip)
		}
	}
	return nil
}

const cniBinDir = "/usr/lib/cni"

func randomID() string {
	var b [2]byte
	rand.Read(b[:])
	return fmt.Sprintf("%04x", binary.BigEndian.Uint16(b[:]))
}

// HostPath is where path, as the node's processes see it, is on the host.
// Paths outside /var/lib, /run and /var/log are the host's own.
func (n *Node) HostPath(path string) string {
	for _, top := range []string{"/var/lib", "/run", "/var/log"} {
		if path == top || strings.HasPrefix(path, top+"/") {
			return filepath.Join(n.Root, path)
		}
	}
	return path
}

// NodePath is path as seen by a process of the node's, such as the kubelet:
// /proc/PID/root reaches into its mount namespace, where the kubelet's own
// mounts (a pod's projected token) are.
func (n *Node) NodePath(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", n.kubelet.Cmd.Process.Pid, path)
}

func (n *Node) writeRecord() error {
	if err := os.MkdirAll(recordDir, 0o755); err != nil {
		return fmt.Errorf("making %s: %w", recordDir, err)
	}
	b, _ := json.Marshal(n.record)
	return os.WriteFile(filepath.Join(recordDir, filepath.Base(n.Dir)+".json"), b, 0o644)
}

// reapDeadRuns cleans up after nodes whose test process died before Stop.
func reapDeadRuns(logf func(string, ...any)) {
	paths, _ := filepath.Glob(filepath.Join(recordDir, "*.json"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var r record
		if json.Unmarshal(b, &r) != nil || r.Dir == "" {
			os.Remove(p)
			continue
		}
		if syscall.Kill(r.PID, 0) == nil {
			continue // still running
		}
		logf("testnode: cleaning up after the dead run of pid %d (%s)", r.PID, r.Dir)
		n := &Node{Dir: r.Dir, CgroupRoot: r.CgroupRoot, record: r, logf: logf}
		n.cleanHost()
		os.RemoveAll(r.Dir)
		if r.ClusterDir != "" {
			os.RemoveAll(r.ClusterDir)
		}
		os.Remove(p)
	}
}

func (n *Node) startControlPlane() error {
	// A /24 of loopback for the run: its .1 serves the API on 443, as the
	// `kubernetes` Service's ClusterIP, and .10 is the cluster DNS.
	var b [2]byte
	rand.Read(b[:])
	prefix := fmt.Sprintf("127.%d.%d", 1+int(b[0])%250, 1+int(b[1])%250)
	host := prefix + ".1"
	var err error
	n.Cluster, err = testcluster.StartWith(testcluster.Options{
		Host: host, Port: 443, ServiceCIDR: prefix + ".0/24", PodAdmission: true,
	})
	if err != nil {
		return fmt.Errorf("starting etcd and kube-apiserver: %w", err)
	}
	n.record.ClusterDir = n.Cluster.Dir
	if err := n.writeRecord(); err != nil {
		return err
	}
	n.Client = n.Cluster.Client
	n.logf("testnode: kube-apiserver at %s; logs in %s", n.Cluster.URL(), n.Cluster.Dir)
	if n.DNS, err = testdns.Listen(prefix + ".10:53"); err != nil {
		return err
	}
	for _, c := range []struct{ name, user string }{
		{"kube-controller-manager", "system:kube-controller-manager"},
		{"kube-scheduler", "system:kube-scheduler"},
	} {
		kc := filepath.Join(n.Dir, c.name+".kubeconfig")
		if _, err := n.Cluster.UserConfig(c.user, nil, kc); err != nil {
			return fmt.Errorf("writing %s's kubeconfig: %w", c.name, err)
		}
	}
	bin := n.Cluster.BinDir
	kcm := exec.Command(filepath.Join(bin, "kube-controller-manager"),
		"--kubeconfig="+filepath.Join(n.Dir, "kube-controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+filepath.Join(n.Dir, "kube-controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+filepath.Join(n.Dir, "kube-controller-manager.kubeconfig"),
		"--controllers=daemonset-controller,deployment-controller,replicaset-controller,node-lifecycle-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,namespace-controller,garbage-collector-controller,pod-garbage-collector-controller,ttl-controller",
		"--service-account-private-key-file="+n.Cluster.ServiceAccountKeyFile(),
		"--root-ca-file="+n.Cluster.CAFile(),
		"--use-service-account-credentials=true",
		"--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port=0",
		"--concurrent-daemonset-syncs=1",
		"--v=2",
	)
	if err := n.spawn("kube-controller-manager", kcm); err != nil {
		return err
	}
	sched := exec.Command(filepath.Join(bin, "kube-scheduler"),
		"--kubeconfig="+filepath.Join(n.Dir, "kube-scheduler.kubeconfig"),
		"--authentication-kubeconfig="+filepath.Join(n.Dir, "kube-scheduler.kubeconfig"),
		"--authorization-kubeconfig="+filepath.Join(n.Dir, "kube-scheduler.kubeconfig"),
		"--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port=0",
		"--v=1",
	)
	return n.spawn("kube-scheduler", sched)
}

// startNamespace starts the process that holds the node's mount namespace,
// with the node's own /var/lib, /run and /var/log bound in it.
func (n *Node) startNamespace() error {
	for _, d := range []string{"var/lib/kubelet", "var/lib/containerd", "var/lib/cni", "var/lib/nodeguard", "run/containerd", "run/netns", "var/log/journal", "var/log/pods", "var/log/containers"} {
		if err := os.MkdirAll(filepath.Join(n.Root, d), 0o755); err != nil {
			return err
		}
	}
	script := fmt.Sprintf("set -e; mount --rbind %[1]s/var/lib /var/lib; mount --bind %[1]s/run /run; mount --bind %[1]s/var/log /var/log; echo ready; exec sleep infinity", n.Root)
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(n.Dir, "namespace.log"))
	if err != nil {
		return err
	}
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting the node's mount namespace: %w", err)
	}
	n.holder = cmd
	n.holderEnd = make(chan struct{})
	go func() { cmd.Wait(); f.Close(); close(n.holderEnd) }()
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		b, _ := os.ReadFile(filepath.Join(n.Dir, "namespace.log"))
		return fmt.Errorf("making the node's mount namespace failed: %s", b)
	}
	n.record.MountNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid))
	return n.writeRecord()
}

// kubeletDirSize is the size of the loop filesystem of the kubelet's root
// dir: pods' emptyDirs and the agent's probe directory are all it holds.
const kubeletDirSize = 1 << 30

// mountKubeletDir puts the kubelet's root dir on a filesystem of its own, a
// loop-mounted ext4 image, so that a test can freeze it (FreezeKubeletDir)
// as a dead disk would stop, with nothing else of the machine's affected.
// It is mounted on the host, under the node's directory, so that a clean-up
// can thaw and unmount it after the node's namespace is gone.
func (n *Node) mountKubeletDir() error {
	img := filepath.Join(n.Dir, "kubelet.img")
	f, err := os.Create(img)
	if err != nil {
		return fmt.Errorf("making the kubelet dir's image: %w", err)
	}
	err = f.Truncate(kubeletDirSize)
	f.Close()
	if err != nil {
		return fmt.Errorf("sizing the kubelet dir's image: %w", err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		return fmt.Errorf("mkfs.ext4 %s: %w\n%s", img, err, out)
	}
	dir := filepath.Join(n.Root, "var/lib/kubelet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("loop-mounting the kubelet dir's image: %w\n%s", err, out)
	}
	n.record.KubeletMount = dir
	return n.writeRecord()
}

// FreezeKubeletDir freezes the filesystem of the kubelet's root dir
// (fsfreeze): every write to it, pods' emptyDirs included, blocks until
// ThawKubeletDir, while reads and the kubelet's status go on.
func (n *Node) FreezeKubeletDir() error {
	if out, err := exec.Command("fsfreeze", "--freeze", n.record.KubeletMount).CombinedOutput(); err != nil {
		return fmt.Errorf("fsfreeze --freeze %s: %w\n%s", n.record.KubeletMount, err, out)
	}
	return nil
}

// ThawKubeletDir ends FreezeKubeletDir; thawing what is not frozen is no
// error.
func (n *Node) ThawKubeletDir() error {
	if n.record.KubeletMount == "" {
		return nil
	}
	out, err := exec.Command("fsfreeze", "--unfreeze", n.record.KubeletMount).CombinedOutput()
	if err != nil && !strings.Contains(string(out), "Invalid argument") {
		return fmt.Errorf("fsfreeze --unfreeze %s: %w\n%s", n.record.KubeletMount, err, out)
	}
	return nil
}

// unmountKubeletDir thaws and detaches the kubelet dir's filesystem; its
// loop device goes with it (autoclear).
func (n *Node) unmountKubeletDir() {
	dir := n.record.KubeletMount
	if dir == "" {
		return
	}
	if err := n.ThawKubeletDir(); err != nil {
		n.logf("testnode: %v", err)
	}
	if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
		n.logf("testnode: umount %s: %v %s; detaching it instead", dir, err, out)
		exec.Command("umount", "--lazy", dir).Run()
	}
}

// inNamespace runs name inside the node's mount namespace.
func (n *Node) inNamespace(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--mount=/proc/" + strconv.Itoa(n.holder.Process.Pid) + "/ns/mnt", "--", name}, args...)...)
}

// startJournald runs a real systemd-journald in the node's namespace, as a
// node's journald would run: it reads /dev/kmsg and stores the kernel's
// messages under /var/log/journal, which the DaemonSet mounts. Without it
// (not installed, or it will not run without systemd as PID 1) the node has
// no journal, and Journald says so.
func (n *Node) startJournald() {
	bin := "/lib/systemd/systemd-journald"
	if _, err := os.Stat(bin); err != nil {
		n.logf("testnode: no systemd-journald (%v); the node has no journal", err)
		return
	}
	machineID, err := os.ReadFile("/etc/machine-id")
	if err != nil || len(strings.TrimSpace(string(machineID))) != 32 {
		n.logf("testnode: no /etc/machine-id; the node has no journal")
		return
	}
	os.MkdirAll(filepath.Join(n.Root, "run/systemd/journal"), 0o755)
	if err := n.spawn("systemd-journald", n.inNamespace(bin)); err != nil {
		n.logf("testnode: systemd-journald did not start: %v", err)
		return
	}
	// Without systemd-journal-flush.service journald keeps the journal in
	// /run/log/journal, which the DaemonSet mounts as well. (Asked to flush,
	// it refuses here: /run and /var/log are one disk filesystem.)
	volatile := filepath.Join(n.Root, "run/log/journal", strings.TrimSpace(string(machineID)), "system.journal")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(volatile); err == nil {
			n.Journald = true
			n.logf("testnode: systemd-journald writes %s", filepath.Dir(volatile))
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	n.logf("testnode: systemd-journald made no journal in 20 s; see %s", n.logPath("systemd-journald"))
}

func (n *Node) startContainerd(ctx context.Context) error {
	cniConf := filepath.Join(n.Dir, "cni")
	if err := os.MkdirAll(cniConf, 0o755); err != nil {
		return err
	}
	subnet := fmt.Sprintf("100.%d.%d.0/24", 64+int(n.record.Bridge[4])%64, int(n.record.Bridge[5]))
	// No gateway and no masquerade: there is no iptables here, and pods
	// need no way out of the node; this keeps ip_forward as it was.
	conflist := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"ngnode","plugins":[
 {"type":"bridge","bridge":%q,"isGateway":false,"ipMasq":false,"hairpinMode":false,
  "ipam":{"type":"host-local","ranges":[[{"subnet":%q}]]}},
 {"type":"loopback"}]}`, n.record.Bridge, subnet)
	if err := os.WriteFile(filepath.Join(cniConf, "10-ngnode.conflist"), []byte(conflist), 0o644); err != nil {
		return err
	}
	// containerd 1.6: restrict_oom_score_adj, or every sandbox fails with
	// "can't get final child's PID from pipe" (runc may not lower
	// oom_score_adj here); cgroupfs, as the kubelet is told.
	config := fmt.Sprintf(`version = 2
root = "/var/lib/containerd"
state = "/run/containerd/state"
[grpc]
  address = "/run/containerd/containerd.sock"
[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
`, PauseImage, cniBinDir, cniConf)
	path := filepath.Join(n.Dir, "containerd.toml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		return err
	}
	if err := n.spawn("containerd", n.inNamespace("containerd", "--config", path)); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(n.ContainerdSocket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd made no socket in 30 s; log:\n%s", n.tail("containerd"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return n.importPause(ctx)
}

// importPause builds hack/pause, makes its image and imports it as the
// sandbox image.
func (n *Node) importPause(ctx context.Context) error {
	archive, err := imagebuild.BuildPause(ctx, n.Dir, PauseImage)
	if err != nil {
		return err
	}
	return n.ImportImage(ctx, archive)
}

// TestPodImage is the tests' workload image (hack/testpod), imported by
// ImportTestPod: its container's args say what it does.
const TestPodImage = "nodeguard.test/testpod:e2e"

// ImportTestPod builds hack/testpod and imports its image as TestPodImage.
func (n *Node) ImportTestPod(ctx context.Context) error {
	archive, err := imagebuild.BuildProgram(ctx, n.Dir, imagebuild.TestPod, "./hack/testpod", TestPodImage)
	if err != nil {
		return err
	}
	return n.ImportImage(ctx, archive)
}

// ImportImage imports an OCI image archive into the node's containerd,
// where the kubelet finds it (no image can be pulled here: pods must use
// a tag that is not latest, or imagePullPolicy IfNotPresent or Never).
func (n *Node) ImportImage(ctx context.Context, archive string) error {
	out, err := exec.CommandContext(ctx, "ctr", "--address", n.ContainerdSocket, "--namespace", "k8s.io",
		"images", "import", archive).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %w\n%s", archive, err, out)
	}
	return nil
}

func (n *Node) startKubelet() error {
	for _, h := range cgroupHierarchies() {
		if err := os.MkdirAll(filepath.Join(h, n.CgroupRoot), 0o755); err != nil {
			return fmt.Errorf("making the kubelet's cgroup root: %w", err)
		}
	}
	kc := filepath.Join(n.Dir, "kubelet.kubeconfig")
	if _, err := n.Cluster.UserConfig("system:node:"+n.Name, []string{"system:nodes"}, kc); err != nil {
		return fmt.Errorf("writing the kubelet's kubeconfig: %w", err)
	}
	// On the API server's address, which its serving certificate names.
	relay, err := NewRelay(net.JoinHostPort(n.Cluster.Host, "0"), net.JoinHostPort(n.Cluster.Host, strconv.Itoa(n.Cluster.APIPort)))
	if err != nil {
		return err
	}
	n.KubeletRelay = relay
	kubeconfig, err := clientcmd.LoadFromFile(kc)
	if err != nil {
		return fmt.Errorf("reading the kubelet's kubeconfig: %w", err)
	}
	for _, c := range kubeconfig.Clusters {
		c.Server = "https://" + relay.Addr()
	}
	if err := clientcmd.WriteToFile(*kubeconfig, kc); err != nil {
		return fmt.Errorf("pointing the kubelet's kubeconfig at its relay: %w", err)
	}
	ports, err := testcluster.FreePorts(1)
	if err != nil {
		return err
	}
	dnsHost, _, _ := net.SplitHostPort(n.DNS.Addr)
	// A real node's kubelet config, but for this machine: cgroup v1 and
	// cgroupfs, no iptables, no eviction or image GC (the host's disk is
	// not the node's to police), a cgroup root of the run's own.
	config := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %s}
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS: [%s]
resolvConf: /etc/resolv.conf
failSwapOn: false
makeIPTablesUtilChains: false
protectKernelDefaults: false
evictionHard: {memory.available: "1Mi", nodefs.available: "0%%", imagefs.available: "0%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 30
serializeImagePulls: false
nodeStatusReportFrequency: 1m
`, n.CgroupRoot, ports[0], n.Cluster.CAFile(), dnsHost)
	configPath := n.HostPath("/var/lib/kubelet/config.yaml")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		return err
	}
	cmd := n.inNamespace(filepath.Join(n.Cluster.BinDir, "kubelet"),
		"--config=/var/lib/kubelet/config.yaml",
		"--kubeconfig="+kc,
		"--root-dir=/var/lib/kubelet",
		"--hostname-override="+n.Name,
		"--node-ip=127.0.0.1",
		"--v=2",
	)
	started := func() {}
	if n.Journald {
		if started, err = n.logAsService("kubelet", cmd); err != nil {
			return err
		}
	}
	err = n.spawn("kubelet", cmd)
	started()
	if err != nil {
		return err
	}
	n.kubelet = n.procs[len(n.procs)-1]
	return nil
}

// logAsService runs cmd as systemd runs a service whose output goes to the
// journal, so that its lines reach the node's journal with _SYSTEMD_UNIT
// NAME.service, as the kubelet's do on a node that systemd runs: cmd and a
// logger process both in the unit's cgroup, <root>.slice/NAME.service of the
// unified hierarchy (journald names a sender's unit from that cgroup,
// skipping leading slices), the logger writing the journal's stream
// protocol (systemd-cat) and, through tee, the component's log file as
// well, which the harness's Log and the tests read. The returned func,
// called once cmd has started, closes the parent's ends of the pipe.
func (n *Node) logAsService(name string, cmd *exec.Cmd) (started func(), err error) {
	unified := unifiedHierarchy()
	if unified == "" {
		return nil, fmt.Errorf("running %s as a service: no unified cgroup hierarchy, where journald looks for a sender's unit", name)
	}
	dir := filepath.Join(unified, n.CgroupRoot+".slice", name+".service")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("making %s's service cgroup: %w", name, err)
	}
	cg, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("opening %s's service cgroup: %w", name, err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		cg.Close()
		return nil, fmt.Errorf("making %s's log pipe: %w", name, err)
	}
	closeAll := func() { r.Close(); w.Close(); cg.Close() }
	into := func() *syscall.SysProcAttr {
		return &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	}
	logger := n.inNamespace("systemd-cat", "--identifier="+name, "tee", "-a", n.logPath(name))
	logger.Stdin = r
	logger.SysProcAttr = into()
	if err := n.spawn(name+"-journal", logger); err != nil {
		closeAll()
		return nil, fmt.Errorf("starting %s's journal logger: %w", name, err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = into()
	n.logf("testnode: %s logs to the journal as %s.service (cgroup %s), and to %s", name, name, dir, n.logPath(name))
	return closeAll, nil
}

// unifiedHierarchy is where the cgroup2 hierarchy is mounted ("" if none):
// /sys/fs/cgroup/unified on a hybrid host like this one.
func unifiedHierarchy() string {
	for _, h := range cgroupHierarchies() {
		var fs syscall.Statfs_t
		if syscall.Statfs(h, &fs) == nil && fs.Type == cgroup2Magic {
			return h
		}
	}
	return ""
}

const cgroup2Magic = 0x63677270

func (n *Node) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for {
		node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err == nil {
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					n.logf("testnode: node %s is Ready", n.Name)
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not Ready in 3 minutes; kubelet log:\n%s", n.Name, n.tail("kubelet"))
		case <-n.kubelet.Exited:
			return fmt.Errorf("the kubelet exited; its log:\n%s", n.tail("kubelet"))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (n *Node) spawn(name string, cmd *exec.Cmd) error {
	logPath := n.logPath(name)
	started, err := testproc.Start(cmd, logPath)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{Process: started, name: name, log: logPath}
	n.procs = append(n.procs, p)
	n.logf("testnode: started %s (pid %d); log %s", name, cmd.Process.Pid, logPath)
	return nil
}

// Signal sends sig to the node's component name (containerd, kubelet,
// kube-controller-manager, ...): SIGSTOP hangs it as a deadlock would, with
// its sockets open, and SIGCONT ends that.
func (n *Node) Signal(name string, sig syscall.Signal) error {
	for _, p := range n.procs {
		if p.name == name {
			if err := p.Cmd.Process.Signal(sig); err != nil {
				return fmt.Errorf("sending %s to %s: %w", sig, name, err)
			}
			return nil
		}
	}
	return fmt.Errorf("sending %s to %s: the node runs no such component", sig, name)
}

func (n *Node) logPath(name string) string { return filepath.Join(n.Dir, name+".log") }

// Log returns the end of a component's log (kubelet, containerd,
// kube-controller-manager, kube-scheduler, systemd-journald).
func (n *Node) Log(name string) string { return n.tail(name) }

func (n *Node) tail(name string) string {
	b, _ := os.ReadFile(n.logPath(name))
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// Stop stops every component, kills what runs in the node's pods, and
// restores what the node changed on the host, then removes its directory
// (NODEGUARD_KEEP_TESTNODE keeps it, for reading the logs).
func (n *Node) Stop() {
	// A frozen filesystem would hold every process writing to it, and the
	// kills below, forever.
	if err := n.ThawKubeletDir(); err != nil {
		n.logf("testnode: %v", err)
	}
	for i := len(n.procs) - 1; i >= 0; i-- {
		p := n.procs[i]
		if p.name == "containerd" || p.name == "systemd-journald" {
			continue
		}
		p.Stop(15 * time.Second)
	}
	if n.KubeletRelay != nil {
		n.KubeletRelay.Close()
	}
	// The pods' containers, and containerd's shims, outlive the kubelet
	// and containerd.
	killCgroupTree(n.CgroupRoot)
	for _, p := range n.procs {
		p.Stop(15 * time.Second)
	}
	if n.holder != nil {
		killNamespace(n.record.MountNS, n.holder.Process.Pid)
		n.holder.Process.Kill()
		<-n.holderEnd
	}
	if n.DNS != nil {
		n.DNS.Close()
	}
	if n.Cluster != nil {
		n.Cluster.Stop()
	}
	n.cleanHost()
	if os.Getenv("NODEGUARD_KEEP_TESTNODE") == "" {
		os.RemoveAll(n.Dir)
	} else {
		n.logf("testnode: kept %s", n.Dir)
	}
	os.Remove(filepath.Join(recordDir, filepath.Base(n.Dir)+".json"))
	if n.lock != nil {
		n.lock.Close()
	}
}

// lockMachine waits, as long as ctx allows, for the machine's one node:
// two kubelets would fight over the host's ports 10248-10250, and the
// machine is shared by test and bench runs. The kernel drops the lock of a
// run that dies.
func lockMachine(ctx context.Context, logf func(string, ...any)) (*os.File, error) {
	if err := os.MkdirAll(recordDir, 0o755); err != nil {
		return nil, fmt.Errorf("making %s: %w", recordDir, err)
	}
	path := filepath.Join(recordDir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	for waited := false; ; waited = true {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		if !waited {
			logf("testnode: another run holds the machine's node (%s); waiting", path)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for %s: %w", path, ctx.Err())
		case <-time.After(time.Second):
		}
	}
}

// cleanHost removes the cgroups and the bridge and puts the sysctls back;
// it is also the clean-up of a dead run.
func (n *Node) cleanHost() {
	if err := n.ThawKubeletDir(); err != nil {
		n.logf("testnode: %v", err)
	}
	// The pods' cgroups, and the services' (logAsService).
	roots := []string{n.CgroupRoot, n.CgroupRoot + ".slice"}
	for _, root := range roots {
		killCgroupTree(root)
	}
	killNamespace(n.record.MountNS, 0)
	n.unmountKubeletDir()
	for _, h := range cgroupHierarchies() {
		for _, root := range roots {
			removeCgroupTree(filepath.Join(h, root))
		}
	}
	if n.record.Bridge != "" {
		if _, err := net.InterfaceByName(n.record.Bridge); err == nil {
			if out, err := exec.Command("ip", "link", "delete", n.record.Bridge).CombinedOutput(); err != nil {
				n.logf("testnode: deleting bridge %s: %v %s", n.record.Bridge, err, out)
			}
		}
	}
	keys := make([]string, 0, len(n.record.Sysctls))
	for k := range n.record.Sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := n.record.Sysctls[k]
		cur, _ := os.ReadFile("/proc/sys/" + k)
		if strings.TrimSpace(string(cur)) == v {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			n.logf("testnode: restoring sysctl %s=%s: %v", k, v, err)
		}
	}
}

// cgroupHierarchies lists the mounted cgroup hierarchies: each v1
// controller's, the named systemd one, and the unified one.
func cgroupHierarchies() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && (fields[i+1] == "cgroup" || fields[i+1] == "cgroup2") {
				out = append(out, fields[4])
			}
		}
	}
	return out
}

// killCgroupTree SIGKILLs every process in root's cgroups, in every
// hierarchy, until none is left (or 30 s pass).
func killCgroupTree(root string) {
	if root == "" || root == "/" {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		found := false
		for _, h := range cgroupHierarchies() {
			filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
				if err != nil || !d.IsDir() {
					return nil
				}
				b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
				for _, f := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
						found = true
						syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				return nil
			})
		}
		if !found {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func removeCgroupTree(dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	// Deepest first: a cgroup is removed only once its children are.
	for i := len(dirs) - 1; i >= 0; i-- {
		syscall.Rmdir(dirs[i])
	}
}

// killNamespace SIGKILLs every process in the mount namespace ns but
// except: containerd's shims, which nothing else stops.
func killNamespace(ns string, except int) {
	if ns == "" {
		return
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == except {
			continue
		}
		if other, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", p)); err == nil && other == ns {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
}

// PodLogs returns what the container of the pod wrote, every restart's
// log in turn, from the kubelet's log files. The Node has no address (the
// kubelet refuses a loopback node IP, and the tests use no other), so the
// API server cannot reach the kubelet for `kubectl logs` or `exec`.
func (n *Node) PodLogs(namespace, pod, uid, container string) (string, error) {
	dir := n.HostPath(fmt.Sprintf("/var/log/pods/%s_%s_%s/%s", namespace, pod, uid, container))
	paths, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(paths) == 0 {
		return "", fmt.Errorf("no logs in %s", dir)
	}
	sort.Slice(paths, func(i, j int) bool {
		a, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(paths[i]), ".log"))
		b, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(paths[j]), ".log"))
		return a < b
	})
	var out strings.Builder
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		out.Write(b)
	}
	return out.String(), nil
}

// Kubectl runs kubectl as the cluster's admin.
func (n *Node) Kubectl(ctx context.Context, args ...string) (string, error) {
	return n.Cluster.Kubectl(ctx, args...)
}
