package remediation

import (
	"context"
	"fmt"

	"github.com/coreos/go-systemd/v22/dbus"
)

// SystemdRestarter restarts units through systemd's D-Bus API (the system
// bus socket, /run/dbus/system_bus_socket, mounted into the pod).
type SystemdRestarter struct{}

// RestartUnit restarts the unit and waits for systemd's job result ("done"
// on success).
func (SystemdRestarter) RestartUnit(ctx context.Context, unit string) (string, error) {
	conn, err := dbus.NewSystemConnectionContext(ctx)
	if err != nil {
		return "", fmt.Errorf("connecting to systemd over D-Bus: %w", err)
	}
	defer conn.Close()
	done := make(chan string, 1)
	if _, err := conn.RestartUnitContext(ctx, unit, "replace", done); err != nil {
		return "", fmt.Errorf("asking systemd to restart %s: %w", unit, err)
	}
	select {
	case result := <-done:
		return result, nil
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for systemd to restart %s: %w", unit, ctx.Err())
	}
}
