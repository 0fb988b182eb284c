package kmsg

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
)

// position is where the agent got to in the kernel log, kept across agent
// restarts so that a restart neither repeats nor skips records. Sequence
// numbers restart with each boot, hence the boot ID.
type position struct {
	BootID  string `json:"bootID"`
	LastSeq int    `json:"lastSeq"`
}

// positionFile reads and writes the position under the state directory.
type positionFile struct {
	path string
}

func (p positionFile) load() (position, error) {
	var pos position
	b, err := os.ReadFile(p.path)
	if errors.Is(err, fs.ErrNotExist) {
		return position{LastSeq: -1}, nil
	}
	if err != nil {
		return position{LastSeq: -1}, fmt.Errorf("reading kmsg position %s: %w", p.path, err)
	}
	if err := json.Unmarshal(b, &pos); err != nil {
		return position{LastSeq: -1}, fmt.Errorf("reading kmsg position %s: %w", p.path, err)
	}
	return pos, nil
}

// save writes the position atomically: a crash leaves the old file or the
// new one, never half of one.
func (p positionFile) save(pos position) error {
	b, err := json.Marshal(pos)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p.path), 0o755); err != nil {
		return fmt.Errorf("saving kmsg position: %w", err)
	}
	tmp := p.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("saving kmsg position: %w", err)
	}
	if err := os.Rename(tmp, p.path); err != nil {
		return fmt.Errorf("saving kmsg position: %w", err)
	}
	return nil
}

// readBootID returns this boot's ID from procfs.
func readBootID(procPath string) (string, error) {
	b, err := os.ReadFile(filepath.Join(procPath, "sys/kernel/random/boot_id"))
	if err != nil {
		return "", fmt.Errorf("reading the boot ID: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// cursorFile keeps the journal source's cursor: the last kernel entry
// reported, so that a restart reports neither it again nor loses what came
// after.
type cursorFile struct {
	path string
	log  *zap.Logger
}

func (f cursorFile) load() string {
	if f.path == "" {
		return ""
	}
	b, err := os.ReadFile(f.path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) && f.log != nil {
			f.log.Warn("journal cursor not read; following the journal from its end", zap.String("file", f.path), zap.Error(err))
		}
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (f cursorFile) save(cursor string) {
	if f.path == "" || cursor == "" {
		return
	}
	tmp := f.path + ".tmp"
	err := os.WriteFile(tmp, []byte(cursor), 0o644)
	if err == nil {
		if err = os.Rename(tmp, f.path); err == nil {
			return
		}
	}
	f.log.Warn("journal cursor not saved; kernel entries may be reported again after a restart", zap.String("file", f.path), zap.Error(err))
}
