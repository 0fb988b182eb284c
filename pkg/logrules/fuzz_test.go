package logrules

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The kernel log corpora, whose lines seed the line parser's fuzzing: the
// kernel rules' own (they are judged against it there) and, when it is
// there, the team's shared one outside this module's tree.
const (
	kernelCorpus = "kernelrules/testdata/kmsg"
	sharedCorpus = "../../../shared/testdata/kmsg"
)

// corpusLogs returns the contents of every log file in the corpora.
func corpusLogs(tb testing.TB) []string {
	var out []string
	for _, dir := range []string{kernelCorpus, sharedCorpus} {
		paths, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err != nil {
				tb.Fatal(err)
			}
			out = append(out, string(b))
		}
	}
	return out
}

func FuzzParseKernelLine(f *testing.F) {
	for _, s := range []string{
		"6,1234,5678901,-;eth0: renamed from veth1",
		"6,1,2,-,caller=T12;msg\n SUBSYSTEM=block",
		"14,1,9223372036854775,-;x",
		"6,1,9223372036854776,-;x",
		"<3>[ 1201.000100] blk_update_request: I/O error, dev xvdf",
		"[9223372036.854775807] x",
		"[9223372036.999999999] x",
		"[ 1.] x", "[.5] x", "[+1.+5] x", "<>[1] x", "<3>", "[", "]", ";", ",,;", "",
		"Nov 23 10:46:01 node-1 kernel: [12345.678901] INFO: task dockerd:1022 blocked",
	} {
		f.Add(s)
	}
	for _, log := range corpusLogs(f) {
		for line := range strings.Lines(log) {
			f.Add(line)
		}
	}
	f.Fuzz(func(t *testing.T, s string) {
		p := ParseKernelLine(s)
		trimmed := strings.TrimRight(s, "\r\n")
		if !strings.Contains(trimmed, p.Text) {
			t.Fatalf("text %q is not part of the input %q", p.Text, s)
		}
		if p.Program != "" && p.Format != FormatSyslog {
			t.Fatalf("%q: program %q outside a syslog line", s, p.Program)
		}
		if p.Priority < -1 || p.Priority > 7 {
			t.Fatalf("priority %d out of range", p.Priority)
		}
		switch p.Format {
		case FormatKmsg:
			if !p.HasTime || p.Monotonic < 0 {
				t.Fatalf("kmsg record %q: HasTime %v, Monotonic %v", s, p.HasTime, p.Monotonic)
			}
			if p.Priority < 0 {
				t.Fatalf("kmsg record %q without a priority", s)
			}
			if strings.Contains(p.Text, "\n") {
				t.Fatalf("kmsg text %q keeps a continuation line", p.Text)
			}
		case FormatDmesg:
			if !p.HasTime || p.Monotonic < 0 {
				t.Fatalf("dmesg line %q: HasTime %v, Monotonic %v", s, p.HasTime, p.Monotonic)
			}
		case FormatSyslog:
			if p.Program == "" || p.Priority != -1 || (p.HasTime && p.Monotonic < 0) {
				t.Fatalf("syslog line %q parsed as %+v", s, p)
			}
		case FormatPlain:
			if p.HasTime || p.Priority != -1 || p.Text != trimmed {
				t.Fatalf("plain line %q parsed as %+v", s, p)
			}
		default:
			t.Fatalf("format %d", p.Format)
		}
	})
}

var uidShape = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
var cidShape = regexp.MustCompile(`^[0-9a-f]{64}$`)

func FuzzParseCgroupPath(f *testing.F) {
	for _, s := range []string{
		"/kubepods/burstable/pod" + testUID + "/" + testCID,
		"/kubepods/pod" + testUID + "/" + testCID,
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + testUIDu + ".slice/cri-containerd-" + testCID + ".scope",
		"/kubepods.slice/kubepods-pod" + testUIDu + ".slice/crio-conmon-" + testCID + ".scope",
		"/kubepods.slice/kubepods-pod" + testUIDu + ".slice",
		"pod" + testUID + "/-" + testCID,
		"pod" + testUID[:8] + "_" + testUID[9:] + ".slice.slice",
		"/user.slice/user-0.slice/session-1.scope", "", "/", "pod", "//pod/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		pod, container := ParseCgroupPath(path)
		if pod != "" && (len(pod) != 36 || !uidShape.MatchString(pod)) {
			t.Fatalf("ParseCgroupPath(%q) pod UID %q is not a dashed UID", path, pod)
		}
		if container != "" && !cidShape.MatchString(container) {
			t.Fatalf("ParseCgroupPath(%q) container ID %q is not 64 hex digits", path, container)
		}
		if container != "" && pod == "" {
			t.Fatalf("ParseCgroupPath(%q) found container %q outside a pod", path, container)
		}
		if pod != "" && !strings.Contains(strings.ReplaceAll(path, "_", "-"), "pod"+pod) {
			t.Fatalf("ParseCgroupPath(%q) pod UID %q is not in the path", path, pod)
		}
		if container != "" && !strings.Contains(path, container) {
			t.Fatalf("ParseCgroupPath(%q) container ID %q is not in the path", path, container)
		}
	})
}

// FuzzParseExpectations: an expectations file is a user's input to
// `replay --expect`; whatever it holds, parsing returns expectations or an
// *ExpectError whose line lies within the file, and never panics.
func FuzzParseExpectations(f *testing.F) {
	for _, p := range []string{kernelCorpus + "/expect.json", sharedCorpus + "/expect.json", "kernelrules/testdata/shared-kmsg-expect.json"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"a.log": {"required": ["X"], "counts": {"X": -1}}}`))
	f.Add([]byte("{\n\"a\": {\"contain\": 1}}"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, err := ParseExpectations("e.json", raw)
		if err == nil {
			return
		}
		var ee *ExpectError
		if !errors.As(err, &ee) {
			t.Fatalf("error %v (%T) is no *ExpectError", err, err)
		}
		if lines := strings.Count(string(raw), "\n") + 1; ee.Line < 1 || ee.Line > lines {
			t.Fatalf("error names line %d of a %d-line file: %v", ee.Line, lines, err)
		}
	})
}
