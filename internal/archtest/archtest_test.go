// Package archtest holds the import rules of docs/architecture.md as a test,
// so that a change that breaks one fails `make test` instead of waiting for
// a reader to notice.
package archtest

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/nodeguard/nodeguard/"

type pkg struct {
	ImportPath string
	Deps       []string
}

// list returns the packages matching pattern with everything they import,
// directly or not; tests excluded, as the rules are about the agent.
func list(t *testing.T, pattern string) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-tags", "journald", "-deps=false", "-json", pattern).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list %s: %v\n%s", pattern, err, ee.Stderr)
		}
		t.Fatalf("go list %s: %v", pattern, err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list's output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatalf("go list %s matched no package", pattern)
	}
	return pkgs
}

func TestImportRules(t *testing.T) {
	for _, rule := range []struct {
		pkgs string
		// forbidden are import path prefixes none of pkgs may depend on.
		forbidden []string
		why       string
	}{
		{"pkg/finding", []string{module, "k8s.io/", "github.com/prometheus/", "go.uber.org/zap"},
			"the vocabulary is a leaf that every other package may use"},
		{"pkg/logrules/...", []string{module + "pkg/checks", module + "pkg/reporter", module + "pkg/kube", module + "pkg/config", "k8s.io/client-go"},
			"the rule engine knows lines and findings, not checks, clients or the supervisor"},
		{"pkg/config", []string{module + "pkg/reporter", module + "pkg/remediation"},
			"configuration describes what to build; it builds nothing"},
		{"pkg/checks/...", []string{module + "pkg/reporter", module + "pkg/remediation", module + "internal/agent"},
			"checks never talk to the API server; the reporter owns every write"},
		{"pkg/reporter/...", []string{module + "pkg/checks", module + "pkg/remediation", module + "internal/"},
			"the reporter serves findings from any source and knows no check"},
		{"pkg/remediation/...", []string{module + "pkg/checks", module + "internal/"},
			"remediation acts on the reporter's conditions, whoever raised them"},
		{"pkg/fieldcheck", []string{module, "k8s.io/"},
			"reading a document strictly needs the vocabulary, not the checks, clients or config that use it"},
		{"internal/evidence", []string{module + "internal/agent", module + "pkg/remediation", module + "pkg/checks/", module + "pkg/config"},
			"the evidence knows findings, the reporter's state and the Recorder interface; the wiring maps the config onto it and hands it the rings"},
		{"pkg/logsource/...", []string{module},
			"a log source reads lines; what they mean is the checks' and the rules' business"},
		{"pkg/kube", []string{module},
			"the API clients and informers serve the checks and the reporter alike"},
		{"pkg/cripods", []string{module, "k8s.io/client-go", "k8s.io/api", "k8s.io/apimachinery"},
			"the pods as the node's container runtime knows them, over CRI alone: no check, no API server"},
		{"pkg/criconn", []string{module, "k8s.io/client-go", "k8s.io/api", "k8s.io/apimachinery"},
			"the one connection to the container runtime serves the checks and the reporter alike, and knows neither"},
	} {
		for _, p := range list(t, module+rule.pkgs) {
			for _, dep := range p.Deps {
				for _, f := range rule.forbidden {
					if matches(dep, f) && !matches(dep, module+"pkg/finding") {
						t.Errorf("%s depends on %s: %s", p.ImportPath, dep, rule.why)
					}
				}
			}
		}
	}
}

// matches says whether import path dep is prefix or inside it; a prefix
// ending in "/" matches everything under it.
func matches(dep, prefix string) bool {
	if strings.HasSuffix(prefix, "/") {
		return strings.HasPrefix(dep, prefix)
	}
	return dep == prefix || strings.HasPrefix(dep, prefix+"/")
}
