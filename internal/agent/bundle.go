package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/nodeguard/nodeguard/internal/evidence"
	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/config"
)

// WriteBundle writes a support bundle to w (see evidence.Bundle): version,
// the effective configuration, what `nodeguard check` finds on this
// machine now (run for wait), and the evidence captured under stateDir.
// It needs no cluster. A check that cannot be built is written into the
// bundle as the check's output, not an error: the rest is worth having.
func WriteBundle(ctx context.Context, cfg *config.Config, reg checks.Registry, version string, wait time.Duration, w io.Writer) error {
	// Before CheckOnce, which reads the kernel's log from its start.
	effective, err := EffectiveConfig(cfg)
	if err != nil {
		return err
	}
	var text, js bytes.Buffer
	result, err := CheckOnce(ctx, cfg, reg, wait)
	if ctx.Err() != nil {
		return err
	}
	if err != nil {
		fmt.Fprintf(&text, "nodeguard check: %v\n", err)
		fmt.Fprintf(&js, "{\"error\": %q}\n", err.Error())
	} else {
		result.WriteText(&text)
		result.WriteJSON(&js)
	}
	return evidence.Bundle{
		Version: version, Config: effective, CheckText: text.Bytes(), CheckJSON: js.Bytes(),
		EvidenceDir: EvidenceDir(cfg), Now: time.Now(),
	}.Write(w)
}

// EffectiveConfig is cfg as YAML with every check's section as it was
// loaded, defaults and `enabled` included: what the agent runs with, flags
// applied, in the config file's own shape.
func EffectiveConfig(cfg *config.Config) ([]byte, error) {
	out := *cfg
	out.Checks = map[string]json.RawMessage{}
	for name, cc := range cfg.CheckConfigs {
		var section map[string]any
		raw, err := json.Marshal(cc)
		if err == nil {
			err = json.Unmarshal(raw, &section)
		}
		if err != nil {
			return nil, fmt.Errorf("writing the config of check %s: %w", name, err)
		}
		if section == nil {
			section = map[string]any{}
		}
		section["enabled"] = cfg.Enabled[name]
		if raw, err = json.Marshal(section); err != nil {
			return nil, fmt.Errorf("writing the config of check %s: %w", name, err)
		}
		out.Checks[name] = raw
	}
	b, err := yaml.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("writing the effective config: %w", err)
	}
	return b, nil
}
