package kubelet

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

func TestKubeletHealthz(t *testing.T) {
	var mode atomic.Value
	mode.Store("ok")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case "sick":
			http.Error(w, "[-]syncloop failed: reason withheld", http.StatusInternalServerError)
		case "hang":
			time.Sleep(500 * time.Millisecond)
		default:
			w.Write([]byte("ok"))
		}
	}))
	defer srv.Close()
	cfg := DefaultConfig()
	cfg.HealthzURL = srv.URL + "/healthz"
	cfg.Timeout = finding.Duration{Duration: 200 * time.Millisecond}
	reg := Registration
	ck, err := reg.New(cfg, checks.Env{Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := ck.(*Check)
	for _, tt := range []struct{ mode, want string }{
		{"ok", ""},
		{"sick", "500 Internal Server Error: [-]syncloop failed"},
		{"hang", "did not answer within 200ms"},
	} {
		mode.Store(tt.mode)
		got := c.probe(context.Background())
		if (tt.want == "" && got != "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s: probe = %q, want %q", tt.mode, got, tt.want)
		}
	}
	cfg.HealthzURL = "127.0.0.1:10248"
	if cfg.Validate() == nil {
		t.Error("a URL without a scheme validated")
	}
}
