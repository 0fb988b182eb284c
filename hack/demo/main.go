// Command demo shows nodeguard as it runs in a cluster: it starts a one-node
// cluster on this machine (internal/testnode: a real kubelet, containerd and
// control plane), imports nodeguard's image, deploys it with
// `kubectl apply -k deploy/` (or the Helm chart with -helm), waits for the
// DaemonSet to be Ready, writes a hung-task record to the kernel log, and
// prints `kubectl describe node` and the pod's logs, then tears it all down.
// Run it as root through `make demo` (`make demo HELM=1`).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeguard/nodeguard/internal/testnode"
)

const imageRef = "docker.io/nodeguard/nodeguard:demo"

func main() {
	helm := flag.Bool("helm", false, "deploy with the Helm chart instead of kustomize")
	hold := flag.Bool("hold", false, "keep the node running until interrupted, to look around")
	flag.Parse()
	if err := run(*helm, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(helm, hold bool) error {
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	say := func(f string, a ...any) { fmt.Printf("demo: "+f+"\n", a...) }
	say("starting a one-node cluster")
	n, err := testnode.Start(ctx, testnode.Options{Logf: say})
	if err != nil {
		return err
	}
	defer n.Stop()
	say("building and importing %s", imageRef)
	if err := n.ImportNodeguard(ctx, repo, imageRef); err != nil {
		return err
	}
	if helm {
		say("helm install")
		out, err := exec.CommandContext(ctx, filepath.Join(n.Cluster.BinDir, "helm"), n.HelmInstallArgs(repo, imageRef)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("helm install: %w\n%s", err, out)
		}
	} else {
		overlay, err := os.MkdirTemp("", "nodeguard-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(overlay)
		if err := testnode.WriteOverlay(overlay, repo, imageRef); err != nil {
			return err
		}
		say("kubectl apply -k deploy/ (image %s)", imageRef)
		if out, err := n.Kubectl(ctx, "apply", "-k", overlay); err != nil {
			return fmt.Errorf("kubectl apply: %w\n%s", err, out)
		}
	}
	say("waiting for the DaemonSet to be Ready")
	if out, err := n.Kubectl(ctx, "-n", "nodeguard", "rollout", "status", "daemonset/nodeguard", "--timeout=4m"); err != nil {
		return fmt.Errorf("rollout status: %w\n%s", err, out)
	}
	// Give the agent a moment to publish its conditions.
	time.Sleep(5 * time.Second)
	// "kernel: " makes journald store a record written from user space as
	// it stores the kernel's own.
	line := "<3>kernel: INFO: task containerd:4242 blocked for more than 120 seconds.\n"
	say("writing to /dev/kmsg: %s", strings.TrimSpace(line))
	if err := os.WriteFile("/dev/kmsg", []byte(line), 0); err != nil {
		return err
	}
	time.Sleep(5 * time.Second)
	out, err := n.Kubectl(ctx, "describe", "node", n.Name)
	fmt.Println(out)
	if err != nil {
		return err
	}
	pods, err := n.Client.CoreV1().Pods("nodeguard").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, p := range pods.Items {
		logs, err := n.PodLogs(p.Namespace, p.Name, string(p.UID), "nodeguard")
		if err != nil {
			return err
		}
		lines := strings.Split(strings.TrimSpace(logs), "\n")
		say("the last lines of pod %s's log (from the kubelet's log files: the node has no address for kubectl logs)", p.Name)
		fmt.Println(strings.Join(lines[max(0, len(lines)-20):], "\n"))
	}
	if hold {
		say("holding; admin kubeconfig %s; Ctrl-C ends", n.Cluster.Kubeconfig)
		<-ctx.Done()
	}
	return nil
}
