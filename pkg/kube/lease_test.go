package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
)

// stalledLeaseClient holds the Lease n1, renewed a minute ago, and watches
// that stay open and bring nothing.
func stalledLeaseClient(t *testing.T) (*fake.Clientset, metav1.MicroTime) {
	first := metav1.NewMicroTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	client := fake.NewClientset(&coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", Namespace: NodeLeaseNamespace},
		Spec:       coordinationv1.LeaseSpec{RenewTime: &first},
	})
	stalled := watch.NewFake()
	t.Cleanup(stalled.Stop)
	client.PrependWatchReactor("leases", func(k8stesting.Action) (bool, watch.Interface, error) {
		return true, stalled, nil
	})
	return client, first
}

// Reread makes the view the server's word as of the call, past a watch that
// brings nothing: a renewal, a Lease that is gone, and a failed read, which
// leaves the view as it was.
func TestLeaseWatcherReread(t *testing.T) {
	client, first := stalledLeaseClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := NewLeaseWatcher(client, "n1")
	w.Confirm = client
	go w.Run(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok, since := w.NodeLease(); ok && !since.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the watcher never listed the Lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
	leases := client.CoordinationV1().Leases(NodeLeaseNamespace)
	renewed := metav1.NewMicroTime(first.Add(30 * time.Second))
	lease, err := leases.Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	lease.Spec.RenewTime = &renewed
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		name    string
		change  func()
		wantErr bool
		want    time.Time // zero: no Lease
	}{
		{"renewed", func() {}, false, renewed.Time},
		{"refused", func() {
			client.PrependReactor("get", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, errors.New("connection refused")
			})
		}, true, renewed.Time},
		{"deleted", func() {
			client.ReactionChain = client.ReactionChain[1:]
			if err := leases.Delete(ctx, "n1", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}, false, time.Time{}},
	}
	for _, s := range steps {
		s.change()
		err := w.Reread(ctx)
		if (err != nil) != s.wantErr {
			t.Fatalf("%s: Reread = %v, want an error: %v", s.name, err, s.wantErr)
		}
		l, ok, _ := w.NodeLease()
		switch {
		case s.want.IsZero() && ok:
			t.Errorf("%s: the view has the Lease renewed at %s, want none", s.name, l.Spec.RenewTime)
		case !s.want.IsZero() && (!ok || !l.Spec.RenewTime.Equal(&metav1.MicroTime{Time: s.want})):
			t.Errorf("%s: the view has %v (exists %v), want the renewal at %s", s.name, l, ok, s.want)
		}
	}
}

// ServerReady says not ready only when the server says so, and stays out
// of the way where it will not say.
func TestServerReady(t *testing.T) {
	tests := []struct {
		name         string
		code         int
		wantNotReady bool
		wantErr      bool
	}{
		{"ready", http.StatusOK, false, false},
		{"a check failing", http.StatusInternalServerError, true, true},
		{"shutting down", http.StatusServiceUnavailable, true, true},
		{"throttled", http.StatusTooManyRequests, true, true},
		{"forbidden", http.StatusForbidden, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/readyz" {
					http.NotFound(w, r)
					return
				}
				w.WriteHeader(tt.code)
				fmt.Fprint(w, "[-]informer-sync failed\nreadyz check failed")
			}))
			defer srv.Close()
			clients, err := NewClients(&rest.Config{Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			err = ServerReady(clients.Requests)(context.Background())
			if (err != nil) != tt.wantErr || errors.Is(err, ErrServerNotReady) != tt.wantNotReady {
				t.Errorf("ServerReady = %v; want an error %v, not ready %v", err, tt.wantErr, tt.wantNotReady)
			}
		})
	}
	// No answer at all is an error, not a verdict on readiness.
	clients, err := NewClients(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ServerReady(clients.Requests)(context.Background()); err == nil || errors.Is(err, ErrServerNotReady) {
		t.Errorf("ServerReady with nothing listening = %v, want an error that is not ErrServerNotReady", err)
	}
}
