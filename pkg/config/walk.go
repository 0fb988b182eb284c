package config

import (
	"fmt"
	"reflect"
	"strings"

	yamlv3 "sigs.k8s.io/yaml/goyaml.v3"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/fieldcheck"
)

const checksField = "checks"

// checkNode walks a YAML node beside the Go type it will decode into and
// returns the first unknown field or ill-typed scalar, with its line; the
// checks section is checked against the registry's config types.
func checkNode(n *yamlv3.Node, t reflect.Type, path string, registry checks.Registry) *Error {
	w := fieldcheck.Walker{Special: map[string]func(*yamlv3.Node) *fieldcheck.Error{}}
	if path == "" {
		w.Special[checksField] = func(n *yamlv3.Node) *fieldcheck.Error {
			return (*fieldcheck.Error)(checkChecks(n, registry))
		}
	}
	return (*Error)(w.Check(n, t, path))
}

// checkChecks checks the checks: section, where each key must be a
// registered check and each section its check's config plus "enabled".
func checkChecks(n *yamlv3.Node, registry checks.Registry) *Error {
	if n.Tag == "!!null" {
		return nil // "checks:" with every section commented out
	}
	if n.Kind != yamlv3.MappingNode {
		return &Error{Line: n.Line, Field: checksField, Reason: "want a mapping from check name to its settings"}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		reg, ok := registry.Lookup(key.Value)
		if !ok {
			return &Error{Line: key.Line, Field: checksField + "." + key.Value,
				Reason: fmt.Sprintf("no check is named %q; known checks: %s", key.Value, strings.Join(registry.Names(), ", "))}
		}
		if val.Kind != yamlv3.MappingNode {
			if val.Tag == "!!null" {
				continue
			}
			return &Error{Line: val.Line, Field: checksField + "." + key.Value, Reason: "want a mapping of the check's settings"}
		}
		section := &yamlv3.Node{Kind: yamlv3.MappingNode, Line: val.Line}
		for j := 0; j+1 < len(val.Content); j += 2 {
			if val.Content[j].Value == "enabled" {
				if err := checkNode(val.Content[j+1], reflect.TypeFor[bool](), checksField+"."+key.Value+".enabled", registry); err != nil {
					return err
				}
				continue
			}
			section.Content = append(section.Content, val.Content[j], val.Content[j+1])
		}
		if err := checkNode(section, reg.ConfigType, "."+checksField+"."+key.Value, registry); err != nil {
			return err
		}
	}
	return nil
}

// lineOf finds the line of a dotted field path such as
// "checks.kmsg.rules[1].pattern"; 0 when the path is not in the file.
func lineOf(root *yamlv3.Node, path string) int { return fieldcheck.LineOf(root, path) }
