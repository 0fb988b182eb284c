package reporter

import "github.com/nodeguard/nodeguard/pkg/finding"

// MaxMessageBytes is the longest message nodeguard sends; the rule engine
// keeps a report's summary within the same limit, so both take it from
// pkg/finding.
const MaxMessageBytes = finding.MaxMessageBytes

// Truncate is finding.Truncate, under the name the reporter's sinks use.
func Truncate(s string, max int) string { return finding.Truncate(s, max) }
