package cri

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/criconn"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

const pause = "registry.k8s.io/pause:3.10"

// containerd16 is the Status(verbose) config containerd 1.6 gives, cut to
// what the probe reads (the keys are the real ones, from 1.6.20).
func containerd16(image string, systemd bool) map[string]string {
	return map[string]string{"config": fmt.Sprintf(`{"containerd":{"snapshotter":"overlayfs","defaultRuntimeName":"runc",`+
		`"runtimes":{"runc":{"runtimeType":"io.containerd.runc.v2","options":{"BinaryName":"","SystemdCgroup":%t}}}},`+
		`"sandboxImage":%q,"systemdCgroup":false}`, systemd, image)}
}

func newSandboxProber(t *testing.T, endpoint string, mutate func(*Config)) (*sandboxProber, *findings) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Endpoint = endpoint
	cfg.Timeout = finding.Duration{Duration: 2 * time.Second}
	cfg.SandboxTimeout = finding.Duration{Duration: 2 * time.Second}
	if mutate != nil {
		mutate(cfg)
	}
	out := &findings{}
	conn := criconn.New(endpoint)
	t.Cleanup(func() { conn.Close() })
	s := &sandboxProber{c: New(cfg, checks.Env{Log: zaptest.NewLogger(t)}), verdict: &verdict{emit: out.emit, endpoint: endpoint},
		runtime: conn.Runtime(), images: conn.Images()}
	return s, out
}

func TestSandboxAttempt(t *testing.T) {
	anError := status.Error(codes.Unknown, "failed to create containerd task: failed to create shim task: OCI runtime create failed: "+
		"open /run/containerd/io.containerd.runtime.v2.task/k8s.io/"+strings.Repeat("ab", 32)+"/log.json: no such file")
	for _, tc := range []struct {
		name   string
		setup  func(f *fakeRuntime)
		config func(*Config)
		// want is the outcome; reason and message what a failure says
		// (message, and why for a skip, as substrings).
		want            outcome
		reason, message string
		why             string
		cgroupParent    string
		image           string
		noRun           bool
		// left is how many sandboxes the attempt could not remove.
		left int
	}{{
		name:  "starts and removes a sandbox of containerd's pause image",
		setup: func(f *fakeRuntime) { f.info = containerd16(pause, false); f.addImage(pause, false) },
		want:  started, image: pause,
	}, {
		name:  "the systemd cgroup driver takes a slice for a parent",
		setup: func(f *fakeRuntime) { f.info = containerd16(pause, true); f.addImage(pause, false) },
		want:  started, image: pause, cgroupParent: "system.slice",
	}, {
		name: "CRI's RuntimeConfig answer wins over containerd's options",
		setup: func(f *fakeRuntime) {
			f.info = containerd16(pause, true)
			f.addImage(pause, false)
			f.runtimeConfig = &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: runtimeapi.CgroupDriver_CGROUPFS}}
		},
		want: started, image: pause,
	}, {
		name: "a configured cgroup parent",
		setup: func(f *fakeRuntime) {
			f.info = containerd16(pause, true)
			f.addImage(pause, false)
		},
		config: func(c *Config) { c.SandboxCgroupParent = "probe.slice" },
		want:   started, image: pause, cgroupParent: "probe.slice",
	}, {
		name:   "a configured image",
		setup:  func(f *fakeRuntime) { f.info = containerd16("", false); f.addImage("example.com/pause:1", false) },
		config: func(c *Config) { c.SandboxImage = "example.com/pause:1" },
		want:   started, image: "example.com/pause:1",
	}, {
		name: "containerd 2 and CRI-O: the pinned pause image",
		setup: func(f *fakeRuntime) {
			f.addImage("docker.io/library/nginx:1", true)
			f.addImage("example.com/pause:9", false)
			f.addImage("localhost:5000/pause", true)
			f.addImage(pause, true)
		},
		want: started, image: "localhost:5000/pause",
	}, {
		name:  "a pause image not on the node is not pulled",
		setup: func(f *fakeRuntime) { f.info = containerd16(pause, false) },
		want:  skipped, why: "is not on the node", noRun: true,
	}, {
		name:  "no pause image known",
		setup: func(f *fakeRuntime) { f.addImage("example.com/pause:9", false) },
		want:  skipped, why: "set sandboxImage", noRun: true,
	}, {
		name: "RunPodSandbox fails",
		setup: func(f *fakeRuntime) {
			f.info = containerd16(pause, false)
			f.addImage(pause, false)
			f.errs["RunPodSandbox"] = anError
			f.createOnFailure = true
		},
		want: failed, reason: "SandboxCreateFailed",
		message: "cannot start a pod sandbox of registry.k8s.io/pause:3.10: CRI RunPodSandbox on ENDPOINT failed: " +
			"failed to create containerd task: failed to create shim task: OCI runtime create failed: " +
			"open /run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/log.json: no such file",
	}, {
		name: "RunPodSandbox does not answer",
		setup: func(f *fakeRuntime) {
			f.info = containerd16(pause, false)
			f.addImage(pause, false)
			f.hang["RunPodSandbox"] = true
			f.createOnFailure = true
		},
		config: func(c *Config) { c.SandboxTimeout = finding.Duration{Duration: 200 * time.Millisecond} },
		want:   failed, reason: "SandboxCreateTimeout",
		message: "cannot start a pod sandbox of registry.k8s.io/pause:3.10: CRI RunPodSandbox on ENDPOINT did not answer within 200ms",
	}, {
		name: "StopPodSandbox fails",
		setup: func(f *fakeRuntime) {
			f.info = containerd16(pause, false)
			f.addImage(pause, false)
			f.errs["StopPodSandbox"] = status.Error(codes.Unknown, "failed to stop sandbox container: context deadline exceeded")
		},
		want: failed, reason: "SandboxCreateFailed",
		message: "cannot remove the probe's pod sandbox: CRI StopPodSandbox on ENDPOINT failed: failed to stop sandbox container: context deadline exceeded",
		left:    1,
	}, {
		name: "a sandbox the kubelet's GC removed first is done",
		setup: func(f *fakeRuntime) {
			f.info = containerd16(pause, false)
			f.addImage(pause, false)
			f.errs["RemovePodSandbox"] = status.Error(codes.NotFound, "not found")
		},
		want: started, image: pause,
	}, {
		name:  "a runtime that does not answer Status: the calls' probe says so",
		setup: func(f *fakeRuntime) { f.errs["Status"] = status.Error(codes.Unavailable, "connection refused") },
		want:  unjudged, why: "CRI Status on ENDPOINT", noRun: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f, endpoint := startFake(t)
			f.set(tc.setup)
			s, _ := newSandboxProber(t, endpoint, tc.config)
			a := s.attempt(context.Background())
			expand := func(s string) string { return strings.ReplaceAll(s, "ENDPOINT", endpoint) }
			if a.outcome != tc.want {
				t.Fatalf("outcome %d (%+v), want %d", a.outcome, a, tc.want)
			}
			if tc.reason != "" && (a.failure.reason != tc.reason || a.failure.message != expand(tc.message)) {
				t.Errorf("failure %s %q\nwant      %s %q", a.failure.reason, a.failure.message, tc.reason, expand(tc.message))
			}
			if !strings.Contains(a.why, expand(tc.why)) {
				t.Errorf("why %q, want it to say %q", a.why, expand(tc.why))
			}
			if a.image != tc.image {
				t.Errorf("image %q, want %q", a.image, tc.image)
			}
			if got := f.called("RunPodSandbox"); tc.noRun != (got == 0) {
				t.Fatalf("RunPodSandbox called %d times", got)
			}
			if tc.noRun {
				return
			}
			// Even a failed attempt leaves nothing behind, but what it
			// could not stop.
			if left := f.sandboxIDs(); len(left) != tc.left {
				t.Errorf("sandboxes left: %v, want %d", left, tc.left)
			}
			cfg := f.configs[0]
			if got := cfg.GetLinux().GetCgroupParent(); got != tc.cgroupParent {
				t.Errorf("cgroup parent %q, want %q", got, tc.cgroupParent)
			}
			if ns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions(); ns.GetNetwork() != runtimeapi.NamespaceMode_NODE {
				t.Errorf("network namespace %v, want the node's", ns.GetNetwork())
			}
			if !isProbes(&runtimeapi.PodSandbox{Metadata: cfg.GetMetadata(), Labels: cfg.GetLabels()}) {
				t.Errorf("the probe does not know its own sandbox: %+v", cfg)
			}
		})
	}
}

func TestSandboxNamesAreUniqueAndLeftoversGo(t *testing.T) {
	f, endpoint := startFake(t)
	f.set(func(f *fakeRuntime) { f.info = containerd16(pause, false); f.addImage(pause, false) })
	leftover := f.addSandbox("nodeguard-probe-1-1", probeNamespace, "nodeguard-probe-1-1", map[string]string{probeLabel: probeLabelValue})
	// A pod of the kubelet's that happens to carry the probe's label, and
	// one sandbox of someone else's: neither is the probe's to remove.
	kubelets := f.addSandbox("web", probeNamespace, "nodeguard-probe-1-2",
		map[string]string{probeLabel: probeLabelValue, kubeletPodUIDLabel: "nodeguard-probe-1-2"})
	others := f.addSandbox("other", "default", "0e0c2c38-6a3c-4d1c-a9b8-8f1f1b7bfe1e", nil)

	s, _ := newSandboxProber(t, endpoint, nil)
	for i := 0; i < 3; i++ {
		if a := s.attempt(context.Background()); a.outcome != started {
			t.Fatalf("attempt %d: %+v", i, a)
		}
	}
	left := strings.Join(f.sandboxIDs(), " ")
	if strings.Contains(left, leftover) || !strings.Contains(left, kubelets) || !strings.Contains(left, others) || len(f.sandboxIDs()) != 2 {
		t.Errorf("sandboxes left %s; want the kubelet's %s and the other %s only", left, kubelets, others)
	}
	names := map[string]bool{}
	for _, cfg := range f.configs {
		names[cfg.GetMetadata().GetName()] = true
	}
	if len(names) != 3 {
		t.Errorf("3 attempts used names %v", names)
	}
}

func TestSandboxLeftWhenTheAgentStopsIsRemoved(t *testing.T) {
	f, endpoint := startFake(t)
	f.set(func(f *fakeRuntime) {
		f.info = containerd16(pause, false)
		f.addImage(pause, false)
		f.hang["RunPodSandbox"] = true
		f.createOnFailure = true
	})
	s, _ := newSandboxProber(t, endpoint, func(c *Config) { c.SandboxTimeout = finding.Duration{Duration: time.Minute} })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(300*time.Millisecond, cancel)
	if a := s.attempt(ctx); a.outcome != unjudged {
		t.Errorf("an attempt cut short by the agent's stop: %+v, want no verdict", a)
	}
	if left := f.sandboxIDs(); len(left) != 0 {
		t.Errorf("sandboxes left after the agent stopped: %v", left)
	}
}

// TestSandboxVerdict plays the two probes' findings in turn and looks at
// the condition the check says last, and when the sandbox probe tries
// next.
func TestSandboxVerdict(t *testing.T) {
	callsOK, callsFail := "calls ok", "calls fail"
	sbOK, sbFail, sbSkip, sbUnjudged := "sandbox ok", "sandbox fail", "sandbox skip", "sandbox unjudged"
	for _, tc := range []struct {
		name   string
		steps  []string
		status finding.Status
		reason string
		// message, as a substring.
		message string
		wait    time.Duration // after the last sandbox step
	}{
		{"one sandbox failure is not enough", []string{callsOK, sbFail}, finding.StatusFalse, "ContainerRuntimeIsResponsive", "answers CRI", 30 * time.Second},
		{"two in a row are", []string{callsOK, sbFail, sbFail}, finding.StatusTrue, "SandboxCreateFailed", "cannot start", 30 * time.Second},
		{"a good call does not clear a sandbox failure", []string{sbFail, sbFail, callsOK, callsOK}, finding.StatusTrue, "SandboxCreateFailed", "cannot start", 30 * time.Second},
		{"a good sandbox does", []string{sbFail, sbFail, callsOK, sbOK}, finding.StatusFalse, "ContainerRuntimeIsResponsive", "starts and removes a pod sandbox of " + pause, 5 * time.Minute},
		{"a good sandbox does not clear the calls' failure", []string{callsFail, sbOK}, finding.StatusTrue, "Timeout", "did not answer", 5 * time.Minute},
		{"the calls' failure comes first", []string{sbFail, sbFail, callsFail}, finding.StatusTrue, "Timeout", "did not answer within 5s; cannot start", 30 * time.Second},
		{"and when it clears, the sandbox's shows", []string{sbFail, sbFail, callsFail, callsOK}, finding.StatusTrue, "SandboxCreateFailed", "cannot start", 30 * time.Second},
		{"no pause image: no verdict of the sandbox's", []string{sbFail, sbFail, sbSkip, callsOK}, finding.StatusFalse, "ContainerRuntimeIsResponsive", "ListPodSandbox", 5 * time.Minute},
		{"a success between failures starts the count over", []string{callsOK, sbFail, sbOK, sbFail}, finding.StatusFalse, "ContainerRuntimeIsResponsive", "starts and removes", 30 * time.Second},
		{"an attempt that could not judge does not", []string{callsOK, sbFail, sbUnjudged, sbFail}, finding.StatusTrue, "SandboxCreateFailed", "cannot start", 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, out := newSandboxProber(t, "unix:///run/fake.sock", nil)
			callsFailure := &failure{"Timeout", "CRI Version on unix:///run/fake.sock did not answer within 5s"}
			sandboxFailure := &failure{"SandboxCreateFailed", "cannot start a pod sandbox of " + pause + ": ..."}
			var wait time.Duration
			for _, step := range tc.steps {
				switch step {
				case callsOK:
					s.verdict.setCalls(nil)
				case callsFail:
					s.verdict.setCalls(callsFailure)
				case sbOK:
					wait = s.judge(attempt{outcome: started, image: pause})
				case sbFail:
					wait = s.judge(attempt{outcome: failed, failure: sandboxFailure})
				case sbSkip:
					wait = s.judge(attempt{outcome: skipped, why: "no image"})
				case sbUnjudged:
					wait = s.judge(attempt{outcome: unjudged, why: "Status failed"})
				}
			}
			all := out.take()
			if len(all) == 0 {
				t.Fatal("nothing emitted")
			}
			last := all[len(all)-1]
			if last.Type != finding.ContainerRuntimeUnresponsive.Type || last.Status != tc.status || last.Reason != tc.reason || !strings.Contains(last.Message, tc.message) {
				t.Errorf("last finding %s %s %s %q, want %s %s with %q", last.Type, last.Status, last.Reason, last.Message, tc.status, tc.reason, tc.message)
			}
			if wait != tc.wait {
				t.Errorf("next attempt after %s, want %s", wait, tc.wait)
			}
		})
	}
}

// TestRunProbesBoth runs the whole check against the fake: the healthy
// verdict names the sandbox, and nothing is left when it stops. Both
// probes go over one connection: the agent's when it has one to the
// check's endpoint, which the check leaves open for its other users, or
// else one of the check's own.
func TestRunProbesBoth(t *testing.T) {
	for _, tc := range []struct {
		name string
		// shared is the agent's connection's endpoint; "" for none, "fake"
		// for the fake's.
		shared string
		// dials of the agent's connection.
		dials int
	}{
		{"the agent's connection", "fake", 1},
		{"its own connection", "", 0},
		{"its own, the agent's being to another endpoint", "unix:///nonexistent/cri.sock", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, endpoint := startFake(t)
			f.set(func(f *fakeRuntime) { f.info = containerd16(pause, false); f.addImage(pause, false) })
			leftover := f.addSandbox("nodeguard-probe-1-1", probeNamespace, "nodeguard-probe-1-1", map[string]string{probeLabel: probeLabelValue})
			cfg := DefaultConfig()
			cfg.Endpoint = endpoint
			cfg.Period = finding.Duration{Duration: 100 * time.Millisecond}
			env := checks.Env{Log: zaptest.NewLogger(t)}
			if tc.shared != "" {
				if tc.shared == "fake" {
					tc.shared = endpoint
				}
				env.CRI = criconn.New(tc.shared)
				defer env.CRI.Close()
			}
			c := New(cfg, env)
			var out findings
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx, out.emit) }()
			deadline := time.Now().Add(10 * time.Second)
			for !lastSays(&out, "starts and removes a pod sandbox of "+pause) {
				if time.Now().After(deadline) {
					t.Fatal("no verdict naming the sandbox in 10 s")
				}
				time.Sleep(20 * time.Millisecond)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if left := f.sandboxIDs(); len(left) != 0 {
				t.Errorf("sandboxes left: %v (the leftover was %s)", left, leftover)
			}
			if f.listedAll() {
				t.Error("a ListPodSandbox asked for every sandbox of the node; the probes need only theirs")
			}
			if env.CRI == nil {
				return
			}
			if got := env.CRI.Dials(); got != tc.dials {
				t.Errorf("the agent's connection was dialled %d times, want %d", got, tc.dials)
			}
			if tc.dials > 0 {
				if _, err := env.CRI.Runtime().Version(context.Background(), &runtimeapi.VersionRequest{}); err != nil {
					t.Errorf("the agent's connection after the check stopped: %v", err)
				}
			}
		})
	}
}

func lastSays(out *findings, msg string) bool {
	out.mu.Lock()
	defer out.mu.Unlock()
	n := len(out.all)
	return n > 0 && out.all[n-1].Status == finding.StatusFalse && strings.Contains(out.all[n-1].Message, msg)
}
