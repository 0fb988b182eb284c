package integration

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// TestAgentMayWriteOnlyItsOwnNode: the API server, with the RBAC and the
// admission policies in deploy/base, lets a token bound to a pod on node A
// patch node A's conditions and write events about node A, and denies both
// for node B.
func TestAgentMayWriteOnlyItsOwnNode(t *testing.T) {
	c := needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ensureNamespace(t, "nodeguard")
	var files []string
	for _, f := range []string{"serviceaccount.yaml", "rbac.yaml", "admission-policy.yaml", "flowcontrol.yaml"} {
		p, _ := filepath.Abs(filepath.Join("../../deploy/base", f))
		files = append(files, "-f", p)
	}
	if out, err := c.Kubectl(ctx, append([]string{"apply"}, files...)...); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	t.Cleanup(func() { c.Kubectl(context.Background(), append([]string{"delete", "--ignore-not-found"}, files...)...) })

	createNode(t, "own-node-a")
	createNode(t, "own-node-b")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "nodeguard-a", Namespace: "nodeguard"},
		Spec: corev1.PodSpec{NodeName: "own-node-a", ServiceAccountName: "nodeguard",
			Containers: []corev1.Container{{Name: "nodeguard", Image: "example.invalid/nodeguard:1"}}},
	}
	pod, err := c.Client.CoreV1().Pods("nodeguard").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Client.CoreV1().Pods("nodeguard").Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	expiry := int64(600)
	tr, err := c.Client.CoreV1().ServiceAccounts("nodeguard").CreateToken(ctx, "nodeguard", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: &expiry,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a pod-bound token: %v", err)
	}
	agentConfig := &rest.Config{
		Host: c.Config.Host, BearerToken: tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.Config.TLSClientConfig.CAData},
	}
	agent, err := kubernetes.NewForConfig(agentConfig)
	if err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"status":{"conditions":[{"type":"KernelDeadlock","status":"False","reason":"KernelHasNoDeadlock","message":"ok"}]}}`)
	event := func(node string) *corev1.Event {
		return &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{GenerateName: node + ".", Namespace: metav1.NamespaceDefault},
			InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: node, UID: "own-node"},
			Reason:         "Test", Message: "m", Type: corev1.EventTypeNormal, Source: corev1.EventSource{Component: "nodeguard"},
		}
	}
	// Each admission policy takes a moment to be in force after it is made:
	// retry what it must deny until it does.
	untilDenied := func(do func() error) error {
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := do()
			if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || time.Now().After(deadline) {
				return err
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	err = untilDenied(func() error { _, err := agent.CoreV1().Nodes().PatchStatus(ctx, "own-node-b", patch); return err })
	if err == nil || !strings.Contains(err.Error(), "nodeguard may write only the Node its pod runs on (own-node-a)") {
		t.Errorf("patching another node's status: %v, want denied by the admission policy", err)
	}
	if _, err := agent.CoreV1().Nodes().PatchStatus(ctx, "own-node-a", patch); err != nil {
		t.Errorf("patching its own node's status: %v", err)
	}
	if _, err := agent.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, event("own-node-a"), metav1.CreateOptions{}); err != nil {
		t.Errorf("an event about its own node: %v", err)
	}
	err = untilDenied(func() error {
		_, err := agent.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, event("own-node-b"), metav1.CreateOptions{})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "only about the Node its pod runs on") {
		t.Errorf("an event about another node: %v, want denied", err)
	}
	// Every read the agent makes is allowed by the RBAC in deploy/base; a
	// missing verb would show only as a check that silently never works.
	const lease = "own-node-a"
	playKubeletLease(t, c, lease)
	for _, r := range []struct {
		what string
		do   func() error
	}{
		{"get its Node", func() error { _, err := agent.CoreV1().Nodes().Get(ctx, "own-node-a", metav1.GetOptions{}); return err }},
		{"list its node's Lease by field", func() error {
			_, err := agent.CoordinationV1().Leases("kube-node-lease").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + lease})
			return err
		}},
		{"watch its node's Lease by field", func() error {
			w, err := agent.CoordinationV1().Leases("kube-node-lease").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + lease})
			if err == nil {
				w.Stop()
			}
			return err
		}},
		{"get its node's Lease (when the watch is silent)", func() error {
			_, err := agent.CoordinationV1().Leases("kube-node-lease").Get(ctx, lease, metav1.GetOptions{})
			return err
		}},
		{"list other nodes' Leases (before restarting the kubelet)", func() error {
			_, err := agent.CoordinationV1().Leases("kube-node-lease").List(ctx, metav1.ListOptions{})
			return err
		}},
	} {
		if err := r.do(); err != nil {
			t.Errorf("the agent may %s: %v", r.what, err)
		}
	}
	// RBAC, not only admission: the agent cannot list secrets, nor pods,
	// even on its own node (the container runtime names an OOM kill's pod).
	if _, err := agent.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("listing secrets: %v, want forbidden", err)
	}
	if _, err := agent.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=own-node-a"}); !apierrors.IsForbidden(err) {
		t.Errorf("listing the pods on its node: %v, want forbidden", err)
	}

	// API Priority and Fairness: the agent's requests are in nodeguard's
	// own priority level, which the API server names in every response.
	level, err := c.Client.FlowcontrolV1().PriorityLevelConfigurations().Get(ctx, "nodeguard", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the nodeguard priority level: %v", err)
	}
	hc, err := rest.HTTPClientFor(agentConfig)
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for deadline := time.Now().Add(20 * time.Second); ; {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.Config.Host+"/api/v1/nodes/own-node-a", nil)
		req.Header.Set("Authorization", "Bearer "+tr.Status.Token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// A new FlowSchema takes a moment to be in force.
		if got = resp.Header.Get("X-Kubernetes-PF-PriorityLevel-UID"); got == string(level.UID) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got != string(level.UID) {
		t.Errorf("the agent's request went to priority level %q, want nodeguard's (%s)", got, level.UID)
	}
}
