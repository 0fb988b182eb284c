// Package logrules turns kernel and service log lines into findings: rules as
// data (a literal prefilter, a pattern, the finding to make), multi-line
// reports folded into one finding, and the line formats a kernel log comes in.
package logrules

import (
	"math"
	"strconv"
	"strings"
	"time"
)

// Line is one log message with the time it was logged.
type Line struct {
	Text string
	// Time is when the line was logged: receive time for live /dev/kmsg
	// records, the line's own timestamp in a replay.
	Time time.Time
	// Source names the line for a reader, e.g. "kern.log:12" or "kmsg:5501".
	Source string
	// Number, when not zero, is the line's number in Source, and what it
	// makes names it "Source:Number": a reader that numbers its lines need
	// not build a name for each.
	Number int
}

// where names the line as a finding does.
func (l Line) where() string {
	if l.Number == 0 {
		return l.Source
	}
	return l.Source + ":" + strconv.Itoa(l.Number)
}

// Format is the shape a kernel log line came in.
type Format int

const (
	FormatPlain Format = iota
	// FormatKmsg is a /dev/kmsg record: "PRI,SEQ,USEC,FLAGS;message".
	FormatKmsg
	// FormatDmesg is dmesg output: "[  12.345678] message", optionally after
	// a "<N>" level prefix.
	FormatDmesg
	// FormatSyslog is a syslog file line (kern.log, messages):
	// "Nov 23 10:00:00 host kernel: [ 12.345678] message" or the same with
	// an RFC 3339 time.
	FormatSyslog
)

// ParsedLine is a line with its format's framing taken off.
type ParsedLine struct {
	Format Format
	Text   string
	// Monotonic is the time since boot the line carries; valid only when
	// HasTime.
	Monotonic time.Duration
	HasTime   bool
	Priority  int // syslog priority without facility; -1 when unknown
	Seq       uint64
	// Program is the syslog tag ("kernel") of a syslog line; a line from
	// any other program is no kernel message.
	Program string
}

// Kernel reports whether the line is a kernel message, as far as its form
// tells.
func (p ParsedLine) Kernel() bool { return p.Program == "" || p.Program == "kernel" }

// ParseKernelLine detects the line's format and strips its framing. It never
// fails: a line that is none of the framed forms is plain text.
func ParseKernelLine(s string) ParsedLine {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	// A record begins with its priority, as strconv reads it; the test
	// spares other lines a search for the record's ";".
	if len(s) > 0 && ('0' <= s[0] && s[0] <= '9' || s[0] == '+') {
		if p, ok := parseKmsgRecord(s); ok {
			return p
		}
	}
	if p, ok := parseDmesg(s); ok {
		return p
	}
	if program, text, ok := cutSyslogHeader(s); ok {
		p := ParsedLine{Format: FormatSyslog, Text: text, Priority: -1, Program: program}
		if d, ok := parseDmesg(text); ok {
			p.Text, p.Monotonic, p.HasTime = d.Text, d.Monotonic, d.HasTime
		}
		return p
	}
	return ParsedLine{Format: FormatPlain, Text: s, Priority: -1}
}

// cutSyslogHeader takes off "Mmm dd hh:mm:ss host tag: " or
// "2026-11-23T10:00:00.123456+00:00 host tag: " and returns the tag (without
// a "[pid]") and the rest.
func cutSyslogHeader(s string) (program, text string, ok bool) {
	var rest string
	switch {
	case len(s) > 16 && s[3] == ' ' && s[6] == ' ' && s[9] == ':' && s[12] == ':' && s[15] == ' ' && isMonth(s[:3]):
		rest = s[16:]
	case len(s) > 20 && s[4] == '-' && s[7] == '-' && s[10] == 'T' && s[13] == ':':
		sp := strings.IndexByte(s, ' ')
		if sp < 0 {
			return "", "", false
		}
		rest = s[sp+1:]
	default:
		return "", "", false
	}
	host, rest, found := strings.Cut(rest, " ")
	if !found || host == "" {
		return "", "", false
	}
	// The tag runs to the first ": " and holds no blank: one pass over
	// it, where a search for ": " and another for blanks read it twice
	// (and the latter built its byte set on every line).
	end := -1
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; c == ' ' || c == '\t' {
			return "", "", false
		} else if c == ':' && i+1 < len(rest) && rest[i+1] == ' ' {
			end = i
			break
		}
	}
	if end <= 0 {
		return "", "", false
	}
	tag, text := rest[:end], rest[end+2:]
	if i := strings.IndexByte(tag, '['); i > 0 {
		tag = tag[:i]
	}
	return tag, text, true
}

func isMonth(m string) bool {
	switch m {
	case "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec":
		return true
	}
	return false
}

// parseKmsgRecord parses "PRI,SEQ,USEC[,FLAGS...];text". The text of a
// /dev/kmsg read may go on with continuation lines (" KEY=value" dictionary
// entries); only the first line is the message.
func parseKmsgRecord(s string) (ParsedLine, bool) {
	head, text, ok := strings.Cut(s, ";")
	if !ok || head == "" {
		return ParsedLine{}, false
	}
	priField, rest, ok := strings.Cut(head, ",")
	if !ok {
		return ParsedLine{}, false
	}
	seqField, rest, ok := strings.Cut(rest, ",")
	if !ok {
		return ParsedLine{}, false
	}
	usecField, _, _ := strings.Cut(rest, ",")
	pri, err := strconv.Atoi(priField)
	if err != nil || pri < 0 {
		return ParsedLine{}, false
	}
	seq, err := strconv.ParseUint(seqField, 10, 64)
	if err != nil {
		return ParsedLine{}, false
	}
	usec, err := strconv.ParseInt(usecField, 10, 64)
	// A time that does not fit a Duration is no kernel's.
	if err != nil || usec < 0 || usec > math.MaxInt64/int64(time.Microsecond) {
		return ParsedLine{}, false
	}
	if nl := strings.IndexByte(text, '\n'); nl >= 0 {
		text = text[:nl]
	}
	return ParsedLine{
		Format:    FormatKmsg,
		Text:      text,
		Monotonic: time.Duration(usec) * time.Microsecond,
		HasTime:   true,
		Priority:  pri & 7, // the facility is in the upper bits
		Seq:       seq,
	}, true
}

// parseDmesg parses "[  12.345678] text" with an optional "<N>" before it.
func parseDmesg(s string) (ParsedLine, bool) {
	pri := -1
	if strings.HasPrefix(s, "<") {
		end := strings.IndexByte(s, '>')
		if end < 2 {
			return ParsedLine{}, false
		}
		n, err := strconv.Atoi(s[1:end])
		if err != nil || n < 0 {
			return ParsedLine{}, false
		}
		pri = n & 7
		s = s[end+1:]
	}
	if !strings.HasPrefix(s, "[") {
		return ParsedLine{}, false
	}
	end := strings.IndexByte(s, ']')
	if end < 0 {
		return ParsedLine{}, false
	}
	stamp := strings.TrimSpace(s[1:end])
	secs, frac, _ := strings.Cut(stamp, ".")
	sec, ok := digits(secs)
	if !ok {
		var err error
		if sec, err = strconv.ParseInt(secs, 10, 64); err != nil || sec < 0 {
			return ParsedLine{}, false
		}
	}
	var nanos int64
	if frac != "" {
		if len(frac) > 9 {
			return ParsedLine{}, false
		}
		f, ok := digits(frac)
		if !ok {
			var err error
			if f, err = strconv.ParseInt(frac, 10, 64); err != nil || f < 0 {
				return ParsedLine{}, false
			}
		}
		for i := len(frac); i < 9; i++ {
			f *= 10
		}
		nanos = f
	}
	if sec > (math.MaxInt64-nanos)/int64(time.Second) {
		return ParsedLine{}, false
	}
	text := strings.TrimPrefix(s[end+1:], " ")
	return ParsedLine{
		Format:    FormatDmesg,
		Text:      text,
		Monotonic: time.Duration(sec)*time.Second + time.Duration(nanos),
		HasTime:   true,
		Priority:  pri,
	}, true
}

// digits reads a number of 1 to 18 decimal digits, every timestamp's
// case, without strconv's error path (a tenth of replay's time); false
// leaves anything else (signs, overflow) to strconv.
func digits(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i] - '0'
		if c > 9 {
			return 0, false
		}
		n = n*10 + int64(c)
	}
	return n, true
}
