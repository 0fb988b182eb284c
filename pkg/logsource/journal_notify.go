//go:build journald

package logsource

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// journalChangeMask is what libsystemd's own watch asks of a journal
// directory. journald writes entries through mmap, which inotify does not
// see, and so after each write it truncates the file to its own size to
// raise IN_MODIFY for its readers: that is what says a new entry is there.
const journalChangeMask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MODIFY | unix.IN_ATTRIB |
	unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_ONLYDIR

// journalChanges tells of changes to journal directories, through an
// inotify descriptor that Go's poller waits on. A follower waiting on it
// costs nothing while the journal is quiet, where a wait inside libsystemd
// (sd_journal_wait) holds a thread in a C call and must time out now and
// then for the follower to look at its context, and each such wake sets
// the Go runtime's monitor thread spinning for a while (measured: about
// 13 wake-ups a second of the idle agent).
type journalChanges struct {
	// C gets a value after changes, many changes coalesced into one.
	C chan struct{}

	f    *os.File
	done chan struct{}
	// tops names the directories asked for by their watch descriptors;
	// written before the reader starts, only read after.
	tops map[int32]string
}

// watchJournal watches dirs and the directories directly inside them (a
// machine ID's), and any made there later. It fails when none of dirs can
// be watched: no journal there yet, or no inotify instance left (a node's
// limit, fs.inotify.max_user_instances, is often spent).
func watchJournal(dirs []string) (*journalChanges, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("watching the journal's directories: %w", err)
	}
	w := &journalChanges{C: make(chan struct{}, 1), f: os.NewFile(uintptr(fd), "inotify"), done: make(chan struct{}), tops: map[int32]string{}}
	var errs []error
	for _, dir := range dirs {
		wd, err := unix.InotifyAddWatch(fd, dir, journalChangeMask)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", dir, err))
			continue
		}
		w.tops[int32(wd)] = dir
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() {
				unix.InotifyAddWatch(fd, filepath.Join(dir, e.Name()), journalChangeMask)
			}
		}
	}
	if len(w.tops) == 0 {
		w.f.Close()
		return nil, fmt.Errorf("watching the journal's directories: %w", errors.Join(errs...))
	}
	go w.read()
	return w, nil
}

// read hands on every batch of events until the descriptor is closed.
func (w *journalChanges) read() {
	defer close(w.done)
	buf := make([]byte, 16*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		w.watchNewDirs(buf[:n])
		select {
		case w.C <- struct{}{}:
		default:
		}
	}
}

// watchNewDirs adds a watch on a directory made in one of the directories
// asked for: the persistent journal's machine directory appears when
// journald first flushes to it.
func (w *journalChanges) watchNewDirs(events []byte) {
	for len(events) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&events[0]))
		end := unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(events) {
			return
		}
		if ev.Mask&unix.IN_ISDIR != 0 && ev.Mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
			if top, ok := w.tops[ev.Wd]; ok {
				name, _, _ := strings.Cut(string(events[unix.SizeofInotifyEvent:end]), "\x00")
				if rc, err := w.f.SyscallConn(); err == nil {
					rc.Control(func(fd uintptr) { unix.InotifyAddWatch(int(fd), filepath.Join(top, name), journalChangeMask) })
				}
			}
		}
		events = events[end:]
	}
}

// Close stops the watch and waits for its reader to end.
func (w *journalChanges) Close() {
	w.f.Close()
	<-w.done
}
