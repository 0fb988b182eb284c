package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestEvidenceOfRealFaults: with the real agent against the real API
// server, two faults each capture a directory under stateDir/evidence and
// an EvidenceCaptured event on the Node naming it. A hung-task record in the
// kernel log file the kmsg check follows (never /dev/kmsg, which other
// tests read) makes KernelDeadlock True, and its directory holds the
// record's line. A loop-mounted ext4 remounted read-only makes the disk
// check's ReadonlyFilesystem True, and its directory holds the mount table
// with the mount read-only, the check's facts naming it, and the kernel's
// own lines about the device, relayed from dmesg into that file as rsyslog
// would. Then `nodeguard bundle` packs both.
func TestEvidenceOfRealFaults(t *testing.T) {
	needCluster(t)
	needRoot(t, "mounts a loop filesystem")
	for _, tool := range []string{"mkfs.ext4", "mount", "umount", "dmesg"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	dir := t.TempDir()
	image, mnt := filepath.Join(dir, "disk.img"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	f, err := os.Create(image)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(32 << 20)
	f.Close()
	run(t, "mkfs.ext4", "-q", "-F", image)
	run(t, "mount", "-o", "loop", image, mnt)
	t.Cleanup(func() {
		for try := 0; try < 50; try++ {
			if exec.Command("umount", mnt).Run() == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		exec.Command("umount", "-l", mnt).Run()
	})
	device := loopDevice(t, mnt)

	kernLog := filepath.Join(dir, "kern.log")
	os.WriteFile(kernLog, nil, 0o644)
	const name = "evidence-node"
	createNode(t, name)
	stateDir := t.TempDir()
	config := fmt.Sprintf("checks:\n  kmsg:\n    devKmsg: false\n    files: [{path: %s}]\n  disk:\n    mounts: [%s]\n    probeDirs: [%s]\n    period: 1s\n", kernLog, mnt, mnt)
	// Only the two checks of the faults: another's verdict on this
	// machine (no containerd, no kubelet) would capture too.
	var flags []string
	for _, fl := range onlyCheck(t, "kmsg") {
		if fl != "--no-check.disk" {
			flags = append(flags, fl)
		}
	}
	cfgArgs := agentArgs(t, stateDir, config, append(flags, "--kubeconfig="+cluster.Kubeconfig, "--node-name="+name, "--listen-address="+freeAddr(t))...)
	_, _, stderr := startAgent(t, cfgArgs...)
	waitCondition(t, name, "ReadonlyFilesystem", corev1.ConditionFalse, 20*time.Second)
	waitReading(t, stderr, kernLog)
	appendLines := func(lines ...string) {
		t.Helper()
		f, err := os.OpenFile(kernLog, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, l := range lines {
			fmt.Fprintln(f, l)
		}
	}

	// 1. A hung runtime task.
	hung := fmt.Sprintf("[ 4242.000001] INFO: task containerd:%d blocked for more than 120 seconds.", 40000+os.Getpid()%10000)
	appendLines(hung)
	waitCondition(t, name, "KernelDeadlock", corev1.ConditionTrue, 20*time.Second)
	ev, took := waitEvent(t, name, "EvidenceCaptured", "KernelDeadlock=True", 20*time.Second)
	first := evidencePath(t, ev.Message, stateDir)
	t.Logf("EvidenceCaptured %s after KernelDeadlock: %s", took, ev.Message)
	if k := readEvidence(t, first, "kernel.log"); !strings.Contains(k, strings.TrimPrefix(hung, "[ 4242.000001] ")) {
		t.Errorf("%s/kernel.log does not hold the hung-task record:\n%s", first, k)
	}
	if c := readEvidence(t, first, "condition.json"); !strings.Contains(c, `"condition": "KernelDeadlock"`) || !strings.Contains(c, "ContainerRuntimeHung") {
		t.Errorf("%s/condition.json:\n%s", first, c)
	}

	// 2. The filesystem read-only. Its mount's kernel lines first, as
	// rsyslog would have put them in kern.log.
	var relayed []string
	for _, l := range strings.Split(string(output(t, "dmesg")), "\n") {
		if strings.Contains(l, "EXT4-fs ("+device+")") {
			relayed = append(relayed, l)
		}
	}
	if len(relayed) == 0 {
		t.Fatalf("dmesg has no line about %s", device)
	}
	relayed = relayed[len(relayed)-1:] // the mount's, the newest
	appendLines(relayed...)
	time.Sleep(time.Second) // the file follower's poll, 250 ms
	run(t, "mount", "-o", "remount,ro", mnt)
	waitCondition(t, name, "ReadonlyFilesystem", corev1.ConditionTrue, 20*time.Second)
	ev, took = waitEvent(t, name, "EvidenceCaptured", "ReadonlyFilesystem=True", 20*time.Second)
	second := evidencePath(t, ev.Message, stateDir)
	t.Logf("EvidenceCaptured %s after ReadonlyFilesystem: %s", took, ev.Message)
	var roLine string
	for _, l := range strings.Split(readEvidence(t, second, "mountinfo"), "\n") {
		if fields := strings.Fields(l); len(fields) > 5 && fields[4] == mnt {
			roLine = l
		}
	}
	if !regexp.MustCompile(`(^| )ro(,| )`).MatchString(roLine) {
		t.Errorf("%s/mountinfo has %s as %q, want it read-only", second, mnt, roLine)
	}
	if c := readEvidence(t, second, "condition.json"); !strings.Contains(c, "MountReadOnly") || !strings.Contains(c, `"mount `+mnt+`"`) {
		t.Errorf("%s/condition.json does not hold the disk check's facts on %s:\n%s", second, mnt, c)
	}
	k := readEvidence(t, second, "kernel.log")
	for _, want := range []string{strings.TrimSpace(regexp.MustCompile(`^\[[^]]*\]`).ReplaceAllString(relayed[0], "")), "blocked for more than 120 seconds"} {
		if !strings.Contains(k, want) {
			t.Errorf("%s/kernel.log does not hold %q:\n%s", second, want, k)
		}
	}
	for _, f := range []string{"pressure-memory", "meminfo", "processes.txt"} {
		if readEvidence(t, second, f) == "" {
			t.Errorf("%s/%s is empty", second, f)
		}
	}

	var sizes []string
	var total int64
	entries, _ := os.ReadDir(second)
	for _, e := range entries {
		if info, err := e.Info(); err == nil {
			sizes = append(sizes, fmt.Sprintf("%s %d", e.Name(), info.Size()))
			total += info.Size()
		}
	}
	t.Logf("%s: %d bytes: %s", filepath.Base(second), total, strings.Join(sizes, ", "))

	// The bundle, made beside the running agent, holds both.
	var out bytes.Buffer
	bundleArgs := append([]string{"bundle", "-o", "-", "--wait=1s"}, flags...)
	for _, a := range cfgArgs {
		if strings.HasPrefix(a, "--state-dir=") || strings.HasPrefix(a, "--config=") {
			bundleArgs = append(bundleArgs, a)
		}
	}
	cmd := exec.Command(needAgent(t), bundleArgs...)
	cmd.Stdout = &out
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("nodeguard bundle: %v\n%s", err, errOut.String())
	}
	names := tarNames(t, out.Bytes())
	for _, want := range []string{"version.txt", "config.yaml", "check.txt", "check.json",
		"evidence/" + filepath.Base(first) + "/kernel.log", "evidence/" + filepath.Base(second) + "/mountinfo"} {
		if !slices.Contains(names, want) {
			t.Errorf("the bundle has no %s; it has %v", want, names)
		}
	}
	t.Logf("bundle: %d bytes, %d files", out.Len(), len(names))
}

// loopDevice is the loop device mounted at mnt, as the kernel names it in
// its lines ("loop3").
func loopDevice(t *testing.T, mnt string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == mnt {
			return filepath.Base(f[0])
		}
	}
	t.Fatalf("%s is not in /proc/self/mounts", mnt)
	return ""
}

func output(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out
}

// evidencePath is the directory an EvidenceCaptured event names, checked to
// be under stateDir.
func evidencePath(t *testing.T, msg, stateDir string) string {
	t.Helper()
	m := regexp.MustCompile(`captured in (\S+)`).FindStringSubmatch(msg)
	if m == nil || !strings.HasPrefix(m[1], filepath.Join(stateDir, "evidence")+"/") {
		t.Fatalf("the event %q names no directory under %s/evidence", msg, stateDir)
	}
	return m[1]
}

func readEvidence(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Errorf("%v", err)
	}
	return string(b)
}

func tarNames(t *testing.T, data []byte) []string {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the bundle is not gzip: %v", err)
	}
	tr := tar.NewReader(gz)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names
		}
		if err != nil {
			t.Fatalf("the bundle is not a tar: %v", err)
		}
		names = append(names, h.Name)
	}
}
