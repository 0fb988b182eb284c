// Package logging builds the agent's zap logger: JSON or console lines on
// stderr, or entries straight into journald with structured fields.
package logging

import (
	"fmt"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger writing to "stderr" (format "json" or "console") or
// "journald".
func New(to, format string) (*zap.Logger, error) {
	level := zap.NewAtomicLevelAt(zap.InfoLevel)
	switch to {
	case "journald":
		if !journal.Enabled() {
			return nil, fmt.Errorf("--log-to=journald: journald's socket is not reachable")
		}
		return zap.New(NewJournalCore(level, journal.Send)), nil
	case "stderr", "":
		enc := zap.NewProductionEncoderConfig()
		enc.EncodeTime = zapcore.ISO8601TimeEncoder
		var encoder zapcore.Encoder
		if format == "console" {
			encoder = zapcore.NewConsoleEncoder(enc)
		} else {
			encoder = zapcore.NewJSONEncoder(enc)
		}
		return zap.New(zapcore.NewCore(encoder, zapcore.Lock(os.Stderr), level)), nil
	}
	return nil, fmt.Errorf("unknown log destination %q", to)
}

// SendFunc is journal.Send's shape, so tests can capture entries.
type SendFunc func(message string, priority journal.Priority, vars map[string]string) error

// JournalCore is a zapcore.Core that sends each entry to journald, with the
// entry's fields as journal fields (NODEGUARD_ + the upper-cased key), so
// that `journalctl NODEGUARD_CHECK=kmsg` finds a check's lines.
type JournalCore struct {
	zapcore.LevelEnabler
	send   SendFunc
	fields []zapcore.Field
}

func NewJournalCore(level zapcore.LevelEnabler, send SendFunc) *JournalCore {
	return &JournalCore{LevelEnabler: level, send: send}
}

func (c *JournalCore) With(fields []zapcore.Field) zapcore.Core {
	return &JournalCore{LevelEnabler: c.LevelEnabler, send: c.send, fields: append(append([]zapcore.Field{}, c.fields...), fields...)}
}

func (c *JournalCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *JournalCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	vars := map[string]string{"SYSLOG_IDENTIFIER": "nodeguard"}
	if e.LoggerName != "" {
		vars["NODEGUARD_LOGGER"] = e.LoggerName
	}
	for k, v := range enc.Fields {
		vars["NODEGUARD_"+JournalFieldName(k)] = fmt.Sprint(v)
	}
	return c.send(e.Message, journalPriority(e.Level), vars)
}

func (c *JournalCore) Sync() error { return nil }

// JournalFieldName makes a zap key a valid journal field name: upper-case
// letters, digits and underscores.
func JournalFieldName(k string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, k)
}

func journalPriority(l zapcore.Level) journal.Priority {
	switch {
	case l >= zapcore.DPanicLevel:
		return journal.PriCrit
	case l >= zapcore.ErrorLevel:
		return journal.PriErr
	case l >= zapcore.WarnLevel:
		return journal.PriWarning
	case l >= zapcore.InfoLevel:
		return journal.PriInfo
	}
	return journal.PriDebug
}
