package kmsg

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
)

// runtimeUnresponsive is the cri check's condition, which a hung runtime
// task in the kernel log raises too: the kernel may see containerd stuck in
// D state before a CRI call times out. The reporter merges the two.
const runtimeUnresponsive = "ContainerRuntimeUnresponsive"

// runtimeHangWindow is how long a hung runtime task keeps
// ContainerRuntimeUnresponsive True without another report; the kernel
// repeats a hung task's report every hung_task_timeout_secs (120 s) while it
// lasts.
const runtimeHangWindow = 10 * time.Minute

// runtimeHang raises ContainerRuntimeUnresponsive from KernelDeadlock
// findings about runtime tasks, and clears it after a quiet window.
type runtimeHang struct {
	mu   sync.Mutex
	last time.Time
	now  func() time.Time
}

func (r *runtimeHang) conditions() finding.ConditionDefault {
	return finding.ConditionDefault{Type: runtimeUnresponsive, Reason: "ContainerRuntimeIsResponsive", Message: "no container runtime task hung in the kernel"}
}

// wrap returns an emit that passes findings on and adds the runtime's
// condition after a hung runtime task.
func (r *runtimeHang) wrap(emit func(finding.Finding)) func(finding.Finding) {
	return func(f finding.Finding) {
		emit(f)
		if f.Kind != finding.KindCondition || f.Type != "KernelDeadlock" || f.Reason != "ContainerRuntimeHung" ||
			f.Status != finding.StatusTrue || strings.Contains(f.Message, "task kubelet:") {
			return // a hung kubelet is no hung runtime
		}
		r.mu.Lock()
		r.last = f.Time
		r.mu.Unlock()
		c := finding.Condition(runtimeUnresponsive, finding.StatusTrue, "RuntimeTaskHung", f.Message)
		c.Time, c.Source = f.Time, f.Source
		emit(c)
	}
}

// expireEvery clears the condition once the window has passed without a
// hung runtime task, until ctx ends or stop is called.
func (r *runtimeHang) expireEvery(ctx context.Context, interval time.Duration, emit func(finding.Finding)) (stop func()) {
	return checks.Every(ctx, interval, func(time.Time) {
		r.mu.Lock()
		expired := !r.last.IsZero() && r.now().Sub(r.last) >= runtimeHangWindow
		if expired {
			r.last = time.Time{}
		}
		r.mu.Unlock()
		if expired {
			emit(finding.Condition(runtimeUnresponsive, finding.StatusFalse, "ContainerRuntimeIsResponsive",
				"no container runtime task hung in the kernel for "+runtimeHangWindow.String()))
		}
	})
}
