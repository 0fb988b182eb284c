package finding

import (
	"strings"
	"unicode/utf8"
)

// MaxMessageBytes is the longest message nodeguard sends: an Event's note is
// limited to 1 KiB, and condition messages are kept to the same size so that
// `kubectl describe node` stays readable. The rule engine keeps a report's
// summary within it, and the reporter cuts anything longer.
const MaxMessageBytes = 1024

// Truncate makes s valid UTF-8 and at most max bytes, cutting on a rune
// boundary and marking the cut, so that kernel text never gets a write
// rejected by the API server.
func Truncate(s string, max int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= max {
		return s
	}
	const mark = "…"
	cut := max - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
