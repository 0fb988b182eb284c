// Command demo shows nodeguard end to end on this machine: it starts a real
// etcd and kube-apiserver on loopback, registers this machine as a Node, runs
// the agent against them, writes a hung-task line into the real kernel log,
// and prints `kubectl describe node`. Run it as root through `make demo`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodeguard/nodeguard/internal/testcluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root: the demo writes to /dev/kmsg")
	}
	agent := "bin/nodeguard"
	if len(os.Args) > 1 {
		agent = os.Args[1]
	}
	fmt.Println("demo: starting etcd and kube-apiserver on loopback")
	c, err := testcluster.Start()
	if err != nil {
		return err
	}
	defer c.Stop()
	ctx := context.Background()
	name, _ := os.Hostname()
	name = strings.ToLower(name)
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("registering node %s: %w", name, err)
	}
	// Play the kubelet's heartbeat once, so that the node has a fresh Lease.
	duration, now := int32(3600), metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-node-lease"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &name, LeaseDurationSeconds: &duration, RenewTime: &now}}
	if _, err := c.Client.CoordinationV1().Leases("kube-node-lease").Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the node's lease: %w", err)
	}
	fmt.Printf("demo: registered node %s; starting %s\n", name, agent)
	cmd := exec.Command(agent, "--kubeconfig="+c.Kubeconfig, "--node-name="+name, "--listen-address=off", "--log-format=console")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	time.Sleep(2 * time.Second)
	line := "<3>INFO: task containerd:4242 blocked for more than 120 seconds.\n"
	fmt.Printf("demo: writing to /dev/kmsg: %s", line)
	if err := os.WriteFile("/dev/kmsg", []byte(line), 0); err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	out, err := c.Kubectl(ctx, "describe", "node", name)
	fmt.Println(out)
	return err
}
