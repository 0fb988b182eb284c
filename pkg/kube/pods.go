package kube

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"
)

// PodIndex knows the pods on one node by UID, from an informer limited to
// that node, so that an OOM kill's event can say which pod it hit.
type PodIndex struct {
	informer cache.SharedIndexInformer
}

const uidIndex = "uid"

// NewPodIndex watches the pods bound to nodeName. Only their names survive
// in the cache: an agent on every node must not hold whole pod specs.
func NewPodIndex(client Client, nodeName string) *PodIndex {
	sel := fields.OneTermEqualSelector("spec.nodeName", nodeName).String()
	inf := SelectedInformer(client, client.CoreV1().Pods(metav1.NamespaceAll), sel, &corev1.Pod{}, nil)
	inf.SetTransform(func(obj any) (any, error) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return obj, nil
		}
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion,
		}}, nil
	})
	inf.AddIndexers(cache.Indexers{uidIndex: func(obj any) ([]string, error) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return nil, fmt.Errorf("pod index: unexpected %T", obj)
		}
		return []string{string(pod.UID)}, nil
	}})
	return &PodIndex{informer: inf}
}

// Run keeps the index until ctx ends.
func (p *PodIndex) Run(ctx context.Context) { p.informer.Run(ctx.Done()) }

// WaitForSync waits until the first list is in, or timeout.
func (p *PodIndex) WaitForSync(ctx context.Context, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return cache.WaitForCacheSync(ctx.Done(), p.informer.HasSynced)
}

// PodName returns the namespace and name of the pod with uid, if it is on
// this node and the index has seen it.
func (p *PodIndex) PodName(uid string) (string, string, bool) {
	objs, err := p.informer.GetIndexer().ByIndex(uidIndex, uid)
	if err != nil || len(objs) == 0 {
		return "", "", false
	}
	pod := objs[0].(*corev1.Pod)
	return pod.Namespace, pod.Name, true
}
