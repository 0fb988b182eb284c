package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/nodeguard/nodeguard/pkg/checks"
)

// The sandbox probe starts a pod sandbox of the runtime's pause image and
// removes it again, the first step of every pod start, because a runtime
// can answer Version, Status and ListPodSandbox while it cannot run a
// container (aws/eks-node-monitoring-agent#179).
//
// The kubelet does not tell its sandboxes from others by their labels: it
// lists every sandbox the runtime has (kuberuntime's getSandboxes filters
// by state only, or by io.kubernetes.pod.uid when it asks about one pod)
// and takes Metadata.Uid for the pod's UID. A probe sandbox is to it a pod
// it does not know: its housekeeping (every 2 s) stops a ready one as an
// orphan (logged at V(2) as "Clean up containers for orphaned pod we had
// not seen before", counted in kubelet_orphaned_runtime_pods_total), and
// its container GC (every minute, evictSandboxes) removes a stopped one.
// Neither harms the probe: its sandbox lives for a fraction of a second,
// stopping a stopped sandbox succeeds, and a removal the kubelet got to
// first answers NotFound, which counts as done. The kubelet is even a
// second cleaner for a sandbox this agent was killed before removing. The
// UID has a prefix no real pod's (a UUID) can have, and a sandbox counts
// as the probe's only with its label, namespace and UID prefix and without
// the kubelet's pod-UID label, so that a pod labelled like the probe is
// never removed.
const (
	probeLabel, probeLabelValue = "nodeguard.io/probe", "sandbox"
	probeNamespace              = "nodeguard-probe"
	kubeletPodUIDLabel          = "io.kubernetes.pod.uid"

	// systemdSandboxParent is the probe's cgroup parent under the systemd
	// cgroup driver; see learn.
	systemdSandboxParent = "system.slice"
)

// SandboxFailureThreshold failed attempts in a row make the condition
// True, and after a failure the next attempt comes SandboxRetry later (or
// after sandboxPeriod, if shorter): one failure may be a runtime
// restarting under the probe, and the second look comes soon, not 5
// minutes later. Exported for the consumers' durations, which must
// outlast them.
const (
	SandboxFailureThreshold = 2
	SandboxRetry            = 30 * time.Second
)

// outcome is what one attempt found.
type outcome int

const (
	// started: a sandbox was started, stopped and removed.
	started outcome = iota
	// failed: a RunPodSandbox, StopPodSandbox or RemovePodSandbox failed.
	failed
	// skipped: there is nothing to start a sandbox of without a pull.
	skipped
	// unjudged: a call before the sandbox's failed (the calls' probe
	// reports that), or the agent is stopping.
	unjudged
)

type attempt struct {
	outcome outcome
	failure *failure // when failed
	image   string   // when started
	why     string   // when skipped or unjudged
}

type sandboxProber struct {
	c        *Check
	verdict  *verdict
	runtime  runtimeapi.RuntimeServiceClient
	images   runtimeapi.ImageServiceClient
	attempts int
	failures checks.InARow
	// skippedWhy is why the last attempt was skipped, so that a lasting
	// reason is logged once.
	skippedWhy string
	// noRuntimeConfig: the runtime answered RuntimeConfig Unimplemented.
	noRuntimeConfig bool
}

// run attempts at once, then every sandboxPeriod (sooner after a failure),
// until ctx ends.
func (s *sandboxProber) run(ctx context.Context) {
	for {
		a := s.attempt(ctx)
		if ctx.Err() != nil {
			return
		}
		timer := time.NewTimer(s.judge(a))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// judge hands an attempt's finding to the verdict and says when to try
// next.
func (s *sandboxProber) judge(a attempt) time.Duration {
	period := s.c.cfg.SandboxPeriod.Duration
	log := s.c.log
	switch a.outcome {
	case started:
		s.failures.Reset()
		s.skippedWhy = ""
		s.verdict.setSandbox(nil, a.image)
		return period
	case failed:
		log.Warn("pod sandbox probe failed", zap.String("reason", a.failure.reason), zap.String("message", a.failure.message))
		if s.failures.Fail(SandboxFailureThreshold) {
			s.verdict.setSandbox(a.failure, "")
		}
		return min(period, SandboxRetry)
	case skipped:
		if a.why != s.skippedWhy {
			log.Warn("pod sandbox probe skipped", zap.String("why", a.why))
		}
		s.failures.Reset()
		s.skippedWhy = a.why
		// Not a failure of the runtime, and the probe no longer knows
		// better than the calls' probe: its earlier verdict goes.
		s.verdict.setSandbox(nil, "")
		return period
	default:
		log.Debug("pod sandbox probe could not judge", zap.String("why", a.why))
		return min(period, SandboxRetry)
	}
}

// attempt removes what earlier attempts left, learns the pause image and
// cgroup parent, starts a sandbox, and stops and removes it again.
func (s *sandboxProber) attempt(ctx context.Context) attempt {
	if f, err := s.clean(ctx, ""); f != nil {
		return attempt{outcome: failed, failure: f}
	} else if err != nil {
		return attempt{outcome: unjudged, why: err.Error()}
	}
	image, parent, err := s.learn(ctx)
	if err != nil {
		return attempt{outcome: unjudged, why: err.Error()}
	}
	if image == "" {
		return attempt{outcome: skipped, why: "the runtime does not say which pause image it uses (containerd 2 and CRI-O say so only of an image they have pinned): set sandboxImage"}
	}
	// The runtime pulls a missing pause image on RunPodSandbox. A probe
	// must not pull (there may be no registry to reach, and a pull is not
	// what it tests), and a missing pause image is a provisioning problem
	// that the kubelet's own pod starts report: no verdict on the runtime.
	present, err := s.present(ctx, image)
	if err != nil {
		return attempt{outcome: unjudged, why: err.Error()}
	}
	if !present {
		return attempt{outcome: skipped, why: fmt.Sprintf("the pause image %s is not on the node, and the probe does not pull it", image)}
	}

	s.attempts++
	// A name of its own for every attempt: one whose RunPodSandbox timed
	// out may still hold its name in the runtime, and must not block the
	// next.
	name := fmt.Sprintf("%s-%d-%d", probeNamespace, time.Now().Unix(), s.attempts)
	var id string
	start := time.Now()
	err = s.c.call(ctx, "RunPodSandbox", s.c.cfg.SandboxTimeout.Duration, func(ctx context.Context) error {
		resp, err := s.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandboxConfig(name, parent)})
		id = resp.GetPodSandboxId()
		return err
	})
	ran := time.Since(start)
	runFailure := s.lifecycleFailure("cannot start a pod sandbox of "+image, "RunPodSandbox", err, name)
	// Removed even when it failed: a RunPodSandbox that failed or timed out
	// may have left a sandbox behind.
	f, cleanErr := s.clean(ctx, id)
	switch {
	case ctx.Err() != nil:
		return attempt{outcome: unjudged, why: "stopping"}
	case runFailure != nil:
		return attempt{outcome: failed, failure: runFailure}
	case f != nil:
		return attempt{outcome: failed, failure: f}
	}
	if cleanErr != nil {
		s.c.log.Debug("listing the probe's sandboxes after an attempt failed; the next attempt removes what is left", zap.Error(cleanErr))
	}
	s.c.log.Debug("pod sandbox probe started and removed a sandbox", zap.String("image", image),
		zap.Duration("run", ran), zap.Duration("total", time.Since(start)))
	return attempt{outcome: started, image: image}
}

// setup makes a call the sandbox needs answered first, with the calls'
// probe's deadline; its failure is that probe's to report.
func (s *sandboxProber) setup(ctx context.Context, method string, fn func(context.Context) error) error {
	if err := s.c.call(ctx, method, s.c.cfg.Timeout.Duration, fn); err != nil {
		return fmt.Errorf("CRI %s on %s: %w", method, s.c.cfg.Endpoint, err)
	}
	return nil
}

// sandboxID matches the runtime's sandbox and container IDs in its errors.
var sandboxID = regexp.MustCompile(`\b[0-9a-f]{64}\b`)

// lifecycleFailure turns a sandbox call's error into the probe's failure,
// nil for none. The message leaves out the attempt's name and the IDs the
// runtime names, so that it stays the same from one failed attempt to the
// next and a lasting failure costs no status writes.
func (s *sandboxProber) lifecycleFailure(what, method string, err error, name string) *failure {
	if err == nil {
		return nil
	}
	if timedOut(err) {
		return &failure{"SandboxCreateTimeout", fmt.Sprintf("%s: CRI %s on %s did not answer within %s",
			what, method, s.c.cfg.Endpoint, s.c.cfg.SandboxTimeout.Duration)}
	}
	msg := status.Convert(err).Message()
	if name != "" {
		msg = strings.ReplaceAll(msg, name, "<sandbox>")
	}
	msg = sandboxID.ReplaceAllString(msg, "<id>")
	return &failure{"SandboxCreateFailed", fmt.Sprintf("%s: CRI %s on %s failed: %s", what, method, s.c.cfg.Endpoint, msg)}
}

// sandboxConfig is the probe's sandbox. The node's network namespace, so
// that CNI is not run: a probe that needed the pod network would fail on
// every node whose CNI is not up yet, which NetworkNotReady already says,
// and would spend a pod IP. No resources: the pause process does nothing
// for the fraction of a second it lives, and a limit would only be a way
// to fail that pods do not have. No log directory: nothing runs in it
// that logs.
func sandboxConfig(name, cgroupParent string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Uid: name, Namespace: probeNamespace},
		Labels:   map[string]string{probeLabel: probeLabelValue},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: cgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{
					Network: runtimeapi.NamespaceMode_NODE,
					Pid:     runtimeapi.NamespaceMode_CONTAINER,
					Ipc:     runtimeapi.NamespaceMode_POD,
				},
			},
		},
	}
}

// probeSandboxesRequest lists the sandboxes carrying the probe's label.
func probeSandboxesRequest() *runtimeapi.ListPodSandboxRequest {
	return &runtimeapi.ListPodSandboxRequest{
		Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{probeLabel: probeLabelValue}},
	}
}

// isProbes says whether a sandbox is one the probe started.
func isProbes(sb *runtimeapi.PodSandbox) bool {
	_, kubelets := sb.GetLabels()[kubeletPodUIDLabel]
	return !kubelets && sb.GetLabels()[probeLabel] == probeLabelValue &&
		sb.GetMetadata().GetNamespace() == probeNamespace && strings.HasPrefix(sb.GetMetadata().GetUid(), probeNamespace+"-")
}

// clean stops and removes the probe's sandboxes: id, the one just started
// (which a failed list would miss), and every other one found, left by an
// attempt whose RunPodSandbox timed out and came up later, or by an agent
// killed before it removed its own. It returns the first failure to stop
// or remove one, and an error when they could not be listed.
func (s *sandboxProber) clean(ctx context.Context, id string) (*failure, error) {
	var ids []string
	if id != "" {
		ids = append(ids, id)
	}
	var listed []*runtimeapi.PodSandbox
	lctx, cancel := outliving(ctx, s.c.cfg.Timeout.Duration)
	defer cancel()
	listErr := s.setup(lctx, "ListPodSandbox", func(ctx context.Context) error {
		resp, err := s.runtime.ListPodSandbox(ctx, probeSandboxesRequest())
		listed = resp.GetItems()
		return err
	})
	for _, sb := range listed {
		if isProbes(sb) && sb.GetId() != id {
			ids = append(ids, sb.GetId())
		}
	}
	var first *failure
	for _, id := range ids {
		if f := s.remove(ctx, id); f != nil && first == nil {
			first = f
		}
	}
	return first, listErr
}

// remove stops and then removes one sandbox, each call with its own
// deadline. A sandbox already gone (the kubelet's GC got to it) is done.
// On the agent's way out ctx has ended: clean-up calls still run, for at
// most the calls' probe's timeout, so that the probe leaves nothing behind
// if it can help it and does not hold up the agent's stop for long.
func (s *sandboxProber) remove(ctx context.Context, id string) *failure {
	for _, method := range []string{"StopPodSandbox", "RemovePodSandbox"} {
		cctx, cancel := outliving(ctx, s.c.cfg.Timeout.Duration)
		err := s.c.call(cctx, method, s.c.cfg.SandboxTimeout.Duration, func(ctx context.Context) error {
			var err error
			if method == "StopPodSandbox" {
				_, err = s.runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
			} else {
				_, err = s.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
			}
			return err
		})
		cancel()
		if status.Code(err) == codes.NotFound {
			return nil
		}
		if f := s.lifecycleFailure("cannot remove the probe's pod sandbox", method, err, ""); f != nil {
			return f
		}
	}
	return nil
}

// outliving is a context that ends grace after ctx does (or when its
// cancel is called), for clean-up that should finish even as the agent
// stops.
func outliving(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })
	return cctx, func() { stop(); cancel() }
}

// learn asks the runtime which pause image it starts sandboxes of and how
// the probe's sandbox must name its cgroup parent. It returns an empty
// image when the runtime does not say (and sandboxImage is not set).
func (s *sandboxProber) learn(ctx context.Context) (image, cgroupParent string, err error) {
	var info map[string]string
	if err := s.setup(ctx, "Status", func(ctx context.Context) error {
		resp, err := s.runtime.Status(ctx, &runtimeapi.StatusRequest{Verbose: true})
		info = resp.GetInfo()
		return err
	}); err != nil {
		return "", "", err
	}
	cfg := parseContainerdConfig(info["config"])
	systemd := cfg.systemdCgroup()
	// CRI's own answer, where the runtime has it (containerd 2, CRI-O);
	// containerd 1.x answers Unimplemented, and is not asked again.
	if !s.noRuntimeConfig {
		var linux *runtimeapi.LinuxRuntimeConfiguration
		err := s.setup(ctx, "RuntimeConfig", func(ctx context.Context) error {
			resp, err := s.runtime.RuntimeConfig(ctx, &runtimeapi.RuntimeConfigRequest{})
			linux = resp.GetLinux()
			return err
		})
		switch {
		case status.Code(err) == codes.Unimplemented:
			s.noRuntimeConfig = true
		case err != nil:
			return "", "", err
		case linux != nil: // SYSTEMD is the enum's zero: trust it only when Linux is there
			systemd = linux.GetCgroupDriver() == runtimeapi.CgroupDriver_SYSTEMD
		}
	}
	// With no parent, containerd puts the sandbox in /k8s.io/ID of each
	// hierarchy, which under the cgroupfs driver runc makes and removes
	// with the sandbox (no cgroup is left behind: the integration test
	// looks). Under the systemd driver runc refuses that path ("expected
	// cgroupsPath to be of format slice:prefix:name", containerd/cri#1563)
	// and the parent must be a slice: system.slice, which every systemd
	// host has and where runc puts what it is given no slice for;
	// containerd makes the sandbox a transient cri-containerd-ID.scope in
	// it, gone with the sandbox. Not under the kubelet's kubepods, whose
	// name and driver are the kubelet's config, not the runtime's.
	cgroupParent = s.c.cfg.SandboxCgroupParent
	if cgroupParent == "" && systemd {
		cgroupParent = systemdSandboxParent
	}
	image = s.c.cfg.SandboxImage
	if image == "" {
		image = cfg.SandboxImage
	}
	if image == "" {
		image, err = s.pinnedPause(ctx)
	}
	return image, cgroupParent, err
}

// present says whether the node has image.
func (s *sandboxProber) present(ctx context.Context, image string) (bool, error) {
	var found bool
	err := s.setup(ctx, "ImageStatus", func(ctx context.Context) error {
		resp, err := s.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: image}})
		found = resp.GetImage() != nil
		return err
	})
	return found, err
}

// pinnedPause finds the pause image among the images the runtime has
// pinned: containerd 2 no longer shows its config's sandbox image in
// Status, but pins that image, and CRI-O pins its pause_image.
func (s *sandboxProber) pinnedPause(ctx context.Context) (string, error) {
	var images []*runtimeapi.Image
	if err := s.setup(ctx, "ListImages", func(ctx context.Context) error {
		resp, err := s.images.ListImages(ctx, &runtimeapi.ListImagesRequest{})
		images = resp.GetImages()
		return err
	}); err != nil {
		return "", err
	}
	var pause []string
	for _, img := range images {
		if !img.GetPinned() {
			continue
		}
		for _, tag := range img.GetRepoTags() {
			if path.Base(repository(tag)) == "pause" {
				pause = append(pause, tag)
			}
		}
	}
	sort.Strings(pause)
	if len(pause) == 0 {
		return "", nil
	}
	return pause[0], nil
}

// repository is an image reference without its tag: registry.k8s.io/pause
// of registry.k8s.io/pause:3.10, localhost:5000/pause of itself.
func repository(ref string) string {
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		return ref[:i]
	}
	return ref
}

// containerdConfig is what the probe reads of the config containerd's CRI
// plugin puts, as JSON, in Status(verbose)'s info under "config":
// sandboxImage up to containerd 1.7 (2.0 moved it to the image service's
// pinned images, which Status does not show), and the default runtime's
// options, where runc's SystemdCgroup is.
type containerdConfig struct {
	SandboxImage string `json:"sandboxImage"`
	Containerd   struct {
		DefaultRuntimeName string `json:"defaultRuntimeName"`
		Runtimes           map[string]struct {
			Options map[string]any `json:"options"`
		} `json:"runtimes"`
	} `json:"containerd"`
}

// parseContainerdConfig reads the config; another runtime's, or none,
// reads as empty.
func parseContainerdConfig(s string) containerdConfig {
	var c containerdConfig
	if s != "" {
		json.Unmarshal([]byte(s), &c)
	}
	return c
}

// systemdCgroup says whether the default runtime uses the systemd cgroup
// driver.
func (c containerdConfig) systemdCgroup() bool {
	v, _ := c.Containerd.Runtimes[c.Containerd.DefaultRuntimeName].Options["SystemdCgroup"].(bool)
	return v
}
