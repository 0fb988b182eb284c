// Package pstore reports kernel panics and oopses from before this boot: the
// kernel saves the tail of its log to persistent storage (pstore: EFI
// variables, ramoops) when it crashes, the next boot shows it under
// /sys/fs/pstore, and systemd-pstore may move it to /var/lib/systemd/pstore.
// Each crash is reported once, remembered across agent restarts.
package pstore

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/finding"
	"github.com/nodeguard/nodeguard/pkg/logsource"
)

// Name is the check's name in configuration and metrics.
const Name = "pstore"

// Config is the check's section of the config file.
type Config struct {
	// Paths are the directories searched for crash records; empty means the
	// host's /sys/fs/pstore (under sysPath) and /var/lib/systemd/pstore.
	Paths []string `json:"paths,omitempty"`
}

// DefaultConfig is the configuration a node gets without a config file.
func DefaultConfig() *Config { return &Config{} }

// Registration is the check's entry in the registry.
var Registration = checks.Define(Name, true, DefaultConfig, func(cfg *Config, env checks.Env) (checks.Check, error) {
	return New(cfg, env), nil
})

// Check reads crash records once at start.
type Check struct {
	paths []string
	log   *zap.Logger
	store logsource.CursorStore
}

// New builds the check.
func New(cfg *Config, env checks.Env) *Check {
	paths := cfg.Paths
	if len(paths) == 0 {
		paths = []string{filepath.Join(env.Sys(), "fs/pstore"), "/var/lib/systemd/pstore"}
	}
	return &Check{paths: paths, log: env.Log, store: logsource.CursorStore{Dir: env.StateDir}}
}

func (c *Check) Name() string                           { return Name }
func (c *Check) Conditions() []finding.ConditionDefault { return nil }

// Run reports the crashes not reported before, then waits: new crash records
// appear only after a reboot, when a new agent starts.
func (c *Check) Run(ctx context.Context, emit func(finding.Finding)) error {
	crashes, err := Scan(c.paths)
	if err != nil {
		// Report what could be read; failing the check would restart it
		// into the same unreadable file for as long as the node runs.
		c.log.Warn("some pstore records could not be read; reporting the others", zap.Error(err))
	}
	seen := c.loadSeen()
	changed := false
	for _, cr := range crashes {
		if seen[cr.ID] {
			continue
		}
		emit(cr.Finding())
		seen[cr.ID] = true
		changed = true
	}
	if changed {
		if err := c.saveSeen(seen); err != nil {
			c.log.Warn("crashes reported but not remembered; a restart will report them again", zap.Error(err))
		}
	}
	<-ctx.Done()
	return nil
}

// reportedFile keeps the IDs of the crashes reported, a JSON list: pstore's
// cursor, in the store the log sources keep theirs in.
const reportedFile = "pstore-reported.json"

func (c *Check) loadSeen() map[string]bool {
	seen := map[string]bool{}
	saved, err := c.store.Load(reportedFile)
	if err != nil || saved == "" {
		if err != nil {
			c.log.Warn("reading reported crashes", zap.Error(err))
		}
		return seen
	}
	var ids []string
	if err := json.Unmarshal([]byte(saved), &ids); err != nil {
		c.log.Warn("reading reported crashes", zap.String("file", reportedFile), zap.Error(err))
		return seen
	}
	for _, id := range ids {
		seen[id] = true
	}
	return seen
}

func (c *Check) saveSeen(seen map[string]bool) error {
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	b, err := json.Marshal(ids)
	if err != nil {
		return fmt.Errorf("saving reported crashes: %w", err)
	}
	return c.store.Save(reportedFile, string(b))
}

// Crash is one crash found in pstore.
type Crash struct {
	// ID identifies the crash by its content, so that systemd-pstore moving
	// the files does not make it new.
	ID     string
	Reason string // KernelPanic or KernelOops
	// Summary is the line that says what happened, e.g. "Kernel panic - not
	// syncing: Fatal exception".
	Summary string
	Files   []string
	Time    time.Time
}

// Finding is the event for the crash.
func (c Crash) Finding() finding.Finding {
	f := finding.Event(finding.SeverityWarning, c.Reason,
		fmt.Sprintf("kernel crashed before this boot (%s): %s", strings.Join(c.Files, ", "), c.Summary))
	f.Source = c.Files[0]
	return f
}

var (
	// pstore's header on each dmesg record: "Panic#1 Part1", "Oops#2 Part3".
	partHeader = regexp.MustCompile(`^(Panic|Oops|Emergency|Restart|Halt|Poweroff)#(\d+) Part(\d+)`)
	panicLine  = regexp.MustCompile(`Kernel panic - not syncing.*`)
	// "general protection fault" only as the kernel words it ("...fault:
	// 0000 [#1]", "...fault, probably for non-canonical address"), not a
	// user process's trap ("traps: java[123] general protection fault ip:").
	oopsLine = regexp.MustCompile(`(?:BUG: kernel NULL pointer dereference|BUG: unable to handle|general protection fault[:,] |kernel BUG at|Oops:|invalid opcode:).*`)
)

// Scan finds crash records in dirs (searching subdirectories, as
// systemd-pstore makes one per crash). A missing directory is no data, not
// an error. A record or directory that cannot be read is skipped: the
// crashes found are returned with an error naming each thing skipped, so
// that one bad file neither hides the others nor stops the check.
func Scan(dirs []string) ([]Crash, error) {
	var skipped []error
	type group struct {
		crash Crash
		hash  []byte
	}
	// The parts of one crash share the directory and the header's kind and
	// number, and the kernel writes them within moments of each other; but
	// each part gets its own time, and slow EFI variable writes can put
	// them in different seconds. The same kind and number from another
	// crash (another boot's Panic#1) is minutes or more apart.
	const partsWithin = 10 * time.Second
	groups := map[string][]*group{}
	var order []*group
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if !errors.Is(err, fs.ErrNotExist) {
					skipped = append(skipped, fmt.Errorf("reading pstore %s: %w", path, err))
				}
				if d == nil || d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() || !strings.HasPrefix(d.Name(), "dmesg") {
				return nil
			}
			rec, err := readRecord(path)
			var info fs.FileInfo
			if err == nil {
				info, err = d.Info()
			}
			if err != nil {
				skipped = append(skipped, fmt.Errorf("reading pstore record %s: %w", path, err))
				return nil
			}
			key := filepath.Dir(path) + "|" + rec.kind + "#" + rec.number
			if rec.kind == "" {
				key = path
			}
			var g *group
			for _, candidate := range groups[key] {
				if d := info.ModTime().Sub(candidate.crash.Time); d <= partsWithin && d >= -partsWithin {
					g = candidate
					break
				}
			}
			if g == nil {
				g = &group{crash: Crash{Time: info.ModTime()}}
				groups[key] = append(groups[key], g)
				order = append(order, g)
			}
			g.crash.Files = append(g.crash.Files, path)
			sum := sha256.Sum256([]byte(rec.body))
			g.hash = append(g.hash, sum[:]...)
			switch {
			case rec.panic != "":
				g.crash.Reason, g.crash.Summary = "KernelPanic", rec.panic
			case g.crash.Reason == "" && (rec.kind == "Panic" || rec.oops != ""):
				g.crash.Reason, g.crash.Summary = reasonFor(rec), rec.summary()
			}
			return nil
		})
		if err != nil {
			skipped = append(skipped, fmt.Errorf("reading pstore %s: %w", dir, err))
		}
	}
	var out []Crash
	for _, g := range order {
		if g.crash.Reason == "" {
			continue // a clean shutdown record, or nothing we recognise
		}
		sum := sha256.Sum256(g.hash)
		g.crash.ID = hex.EncodeToString(sum[:16])
		sort.Strings(g.crash.Files)
		out = append(out, g.crash)
	}
	return out, errors.Join(skipped...)
}

type record struct {
	kind, number string
	panic, oops  string
	body         string
}

func reasonFor(r record) string {
	if r.kind == "Panic" {
		return "KernelPanic"
	}
	return "KernelOops"
}

func (r record) summary() string {
	if r.oops != "" {
		return r.oops
	}
	return "pstore record " + r.kind + "#" + r.number
}

// readRecord reads one pstore dmesg file: its header, and the first panic
// and oops lines in it.
func readRecord(path string) (record, error) {
	f, err := os.Open(path)
	if err != nil {
		return record{}, err
	}
	defer f.Close()
	var r record
	var body strings.Builder
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	first := true
	for sc.Scan() {
		line := sc.Text()
		if first {
			first = false
			if m := partHeader.FindStringSubmatch(line); m != nil {
				r.kind, r.number = m[1], m[2]
				continue
			}
		}
		body.WriteString(line)
		body.WriteByte('\n')
		if r.panic == "" {
			r.panic = panicLine.FindString(line)
		}
		if r.oops == "" {
			r.oops = oopsLine.FindString(line)
		}
	}
	if err := sc.Err(); err != nil {
		return record{}, fmt.Errorf("reading %s: %w", path, err)
	}
	r.body = body.String()
	if r.kind == "Oops" && r.oops == "" && r.panic == "" {
		r.oops = "pstore record Oops#" + r.number
	}
	return r, nil
}
