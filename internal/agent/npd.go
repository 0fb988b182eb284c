package agent

import (
	"fmt"

	"github.com/nodeguard/nodeguard/pkg/checks/kmsg"
	"github.com/nodeguard/nodeguard/pkg/checks/plugins"
	"github.com/nodeguard/nodeguard/pkg/config"
)

// AddNPDFiles gives each node-problem-detector file named with --npd-rules
// to the check that runs it: a custom plugin monitor (plugin "custom") to
// the plugins check, a system log monitor (kernel-monitor.json) to the
// kernel log check, whose loader says what is wrong with a file that is
// neither. Call it after the checks are turned on or off: a custom plugin
// monitor for a disabled plugins check is an error, not a file quietly
// left out.
func AddNPDFiles(cfg *config.Config, paths []string) error {
	for _, path := range paths {
		if !plugins.IsCustomPluginFile(path) {
			kcfg := cfg.CheckConfigs[kmsg.Name].(*kmsg.Config)
			kcfg.NPDRules = append(kcfg.NPDRules, path)
			continue
		}
		if !cfg.Enabled[plugins.Name] {
			return &config.Error{Field: "checks." + plugins.Name + ".enabled",
				Reason: fmt.Sprintf("--npd-rules %s is a custom plugin monitor, and the %s check that runs them is disabled", path, plugins.Name)}
		}
		pcfg := cfg.CheckConfigs[plugins.Name].(*plugins.Config)
		pcfg.Files = append(pcfg.Files, path)
	}
	return nil
}
