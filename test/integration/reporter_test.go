package integration

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodeguard/nodeguard/internal/agent"
	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/config"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/kube"
	"github.com/nodeguard/nodeguard/pkg/reporter"
)

// pushCheck emits whatever the test pushes to it.
type pushCheck struct {
	conds []finding.ConditionDefault
	in    chan finding.Finding
}

func (c *pushCheck) Name() string                           { return "push" }
func (c *pushCheck) Conditions() []finding.ConditionDefault { return c.conds }
func (c *pushCheck) Run(ctx context.Context, emit func(finding.Finding)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case f := <-c.in:
			emit(f)
		}
	}
}

// runAgent wires a check to the reporter and the API server sink the way
// cmd/agent does, and stops them when the test ends.
func runAgent(t *testing.T, nodeName string, check checks.Check) {
	t.Helper()
	log := zaptest.NewLogger(t)
	cfg := *cluster.Config
	cfg.QPS, cfg.Burst = 5, 10
	client, err := kubernetes.NewForConfig(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	sink := newNodeSink(t, client, log, prometheus.NewRegistry(), nodeName)
	rep := reporter.New(log, check.Conditions(), sink)
	runReporter(t, log, sink, rep, check)
}

// runReporter runs the node sink, starts the reporter from the Node as
// cmd/agent does, then runs the check, until the test ends.
func runReporter(t *testing.T, log *zap.Logger, sink *reporter.NodeSink, rep *reporter.Reporter, check checks.Check) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { sink.Run(ctx) })
	wg.Go(func() {
		found, err := sink.ReadConditions(ctx)
		if err != nil {
			return
		}
		rep.Start(found, time.Time{})
		(&checks.Supervisor{Checks: []checks.Check{check}, Emit: rep.Report, Log: log}).Run(ctx, time.Second)
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ctx
}

func TestFindingReachesNodeAndKubeletConditionsStay(t *testing.T) {
	needCluster(t)
	const name = "reporter-node"
	before := createNode(t, name)
	check := &pushCheck{
		conds: []finding.ConditionDefault{{Type: "TestProblem", Reason: "NoTestProblem", Message: "all is well"}},
		in:    make(chan finding.Finding),
	}
	runAgent(t, name, check)

	// On start the owned condition is written with its healthy default.
	waitCondition(t, name, "TestProblem", corev1.ConditionFalse, 10*time.Second)

	check.in <- finding.Condition("TestProblem", finding.StatusTrue, "ProblemFound", "the test found a problem")
	check.in <- finding.Event(finding.SeverityWarning, "TestHappened", "something happened to "+name)
	node, took := waitCondition(t, name, "TestProblem", corev1.ConditionTrue, 15*time.Second)
	t.Logf("condition True on the node %s after the finding", took)
	c := condition(node, "TestProblem")
	if c.Reason != "ProblemFound" || c.Message != "the test found a problem" {
		t.Errorf("condition = %+v, want reason ProblemFound and the finding's message", c)
	}
	ev, took := waitEvent(t, name, "TestHappened", "something happened to "+name, 15*time.Second)
	t.Logf("event on the node %s after the finding", took)
	if ev.Type != corev1.EventTypeWarning || ev.InvolvedObject.UID != name || ev.Source.Component != "nodeguard" {
		t.Errorf("event = type %s, involvedObject %+v, source %+v; want a Warning about node %s (UID = name, as the kubelet does) from nodeguard",
			ev.Type, ev.InvolvedObject, ev.Source, name)
	}
	transition := c.LastTransitionTime

	// The same state again changes nothing, not even the transition time.
	check.in <- finding.Condition("TestProblem", finding.StatusTrue, "ProblemFound", "the test found a problem")
	check.in <- finding.Condition("TestProblem", finding.StatusFalse, "NoTestProblem", "cleared")
	node, _ = waitCondition(t, name, "TestProblem", corev1.ConditionFalse, 15*time.Second)
	if c := condition(node, "TestProblem"); !c.LastTransitionTime.After(transition.Time) && !c.LastTransitionTime.Equal(&transition) {
		t.Errorf("lastTransitionTime went back: %v then %v", transition, c.LastTransitionTime)
	}

	// The kubelet's conditions are exactly as the test left them.
	for _, kubeletType := range []corev1.NodeConditionType{corev1.NodeReady, corev1.NodeMemoryPressure} {
		was, now := condition(before, string(kubeletType)), condition(node, string(kubeletType))
		if now == nil || was.Status != now.Status || was.Reason != now.Reason || !was.LastHeartbeatTime.Equal(&now.LastHeartbeatTime) {
			t.Errorf("kubelet condition %s changed: was %+v, now %+v", kubeletType, was, now)
		}
	}
}

func TestConditionSurvivesAPIServerOutage(t *testing.T) {
	c := needCluster(t)
	const name = "outage-node"
	createNode(t, name)
	check := &pushCheck{
		conds: []finding.ConditionDefault{{Type: "TestProblem", Reason: "NoTestProblem", Message: "all is well"}},
		in:    make(chan finding.Finding),
	}
	runAgent(t, name, check)
	waitCondition(t, name, "TestProblem", corev1.ConditionFalse, 10*time.Second)

	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	// A 60 s outage while findings arrive; the event waits in the spool.
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			c.StartAPIServer()
		}
	})
	// Findings arrive while the server is gone: the newest one must win.
	check.in <- finding.Condition("TestProblem", finding.StatusTrue, "Flapping", "first")
	check.in <- finding.Event(finding.SeverityWarning, "DuringOutage", "seen while the API server was down")
	time.Sleep(30 * time.Second)
	check.in <- finding.Condition("TestProblem", finding.StatusTrue, "ProblemFound", "found during the outage")
	time.Sleep(30 * time.Second)
	if err := c.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	// The sink retries at most MaxRetryInterval (10 s) apart through an
	// outage; this test runs no Lease watch to spot the return sooner.
	node, took := waitCondition(t, name, "TestProblem", corev1.ConditionTrue, 30*time.Second)
	// How soon is a figure for the log, not a pass mark: a slow machine
	// must not fail this test. What must hold is which state arrives.
	t.Logf("condition True %s after the API server was ready again (60 s outage)", took)
	if got := condition(node, "TestProblem"); got.Reason != "ProblemFound" || got.Message != "found during the outage" {
		t.Errorf("after the outage the node holds %s/%q, want the newest finding ProblemFound/%q", got.Reason, got.Message, "found during the outage")
	}
	// Event writes back off to 10 s apart, cut short when a request of the
	// agent's gets through.
	_, took = waitEvent(t, name, "DuringOutage", "while the API server was down", 30*time.Second)
	t.Logf("outage event delivered %s after the API server was ready again", took)
	// The outage itself, reported once the server answers, with its length.
	ev, _ := waitEvent(t, name, "APIServerUnreachable", "could not reach the API server", 10*time.Second)
	t.Logf("outage reported: %s", ev.Message)
	if !strings.Contains(ev.Message, "for 1m") {
		t.Errorf("APIServerUnreachable %q does not give the ~60 s outage's length", ev.Message)
	}

	ctx := context.Background()
	if _, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestHostileKernelTextIsAcceptedByTheAPIServer: kernel text that is not
// valid UTF-8, or longer than an Event's 1 KiB note, still reaches the Node.
func TestHostileKernelTextIsAcceptedByTheAPIServer(t *testing.T) {
	needCluster(t)
	const name = "hostile-node"
	createNode(t, name)
	check := &pushCheck{
		conds: []finding.ConditionDefault{{Type: "TestProblem", Reason: "NoTestProblem", Message: "all is well"}},
		in:    make(chan finding.Finding),
	}
	runAgent(t, name, check)
	waitCondition(t, name, "TestProblem", corev1.ConditionFalse, 10*time.Second)
	hostile := "hostile \xff\xfe\x00 bytes " + strings.Repeat("é long kernel text ", 400)
	check.in <- finding.Condition("TestProblem", finding.StatusTrue, "Hostile", hostile)
	check.in <- finding.Event(finding.SeverityWarning, "HostileEvent", hostile)
	node, _ := waitCondition(t, name, "TestProblem", corev1.ConditionTrue, 15*time.Second)
	ev, _ := waitEvent(t, name, "HostileEvent", "hostile", 15*time.Second)
	for what, msg := range map[string]string{"condition": condition(node, "TestProblem").Message, "event": ev.Message} {
		if len(msg) > reporter.MaxMessageBytes || !utf8.ValidString(msg) || !strings.HasSuffix(msg, "…") {
			t.Errorf("%s message: %d bytes, valid UTF-8 %v, want at most %d, valid, marked as cut", what, len(msg), utf8.ValidString(msg), reporter.MaxMessageBytes)
		}
	}
}

// newNodeSink makes a node sink with the settings a node gets by default.
func newNodeSink(t *testing.T, client kube.Client, log *zap.Logger, reg prometheus.Registerer, nodeName string) *reporter.NodeSink {
	t.Helper()
	s, err := reporter.NewNodeSink(client, log, reg, agent.NodeSinkOptions(config.Default(nil).Reporter, nodeName))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
