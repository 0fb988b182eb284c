package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nodeguard/nodeguard/pkg/checks/all"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// agentBin is the nodeguard binary, built once by TestMain.
var agentBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "nodeguard-agent-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBin = filepath.Join(dir, "nodeguard")
	// As make build stamps it, so that the test sees the version it set.
	build := exec.Command("go", "build", "-ldflags=-X main.version="+testVersion, "-o", agentBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the agent:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agentEnv keeps the environment from pointing the agent at a cluster.
func agentEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") && !strings.HasPrefix(kv, "NODE_NAME=") {
			env = append(env, kv)
		}
	}
	return env
}

// runAgent runs the binary to its end and returns what it printed and its
// exit code.
func runAgent(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, agentBin, args...)
	cmd.Env = agentEnv()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("running %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("nodeguard %v did not end within 30s; stderr:\n%s", args, errOut.String())
	}
	return out.String(), errOut.String(), code
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// oneLine returns stderr's only line, failing the test if it has more or
// none.
func oneLine(t *testing.T, stderr string) string {
	t.Helper()
	line, ok := strings.CutSuffix(stderr, "\n")
	if !ok || line == "" || strings.Contains(line, "\n") {
		t.Fatalf("stderr is not exactly one line:\n%s", stderr)
	}
	return line
}

// TestBadStartExits checks that a bad config file or flag stops the agent
// before it starts, with one line on stderr naming the field or flag. want
// is a prefix of that line, FILE standing for the config file's path.
func TestBadStartExits(t *testing.T) {
	for _, tc := range []struct {
		name   string
		config string // written to a file passed with --config when set
		args   []string
		want   string
	}{
		{
			name:   "unknown field",
			config: "nodeName: a\nbogus: true\n",
			want:   "nodeguard: config FILE:2: field bogus: unknown field; known fields here: ",
		},
		{
			name:   "unknown nested field",
			config: "reporter:\n  heartbeet: 1m\n",
			want:   "nodeguard: config FILE:2: field reporter.heartbeet: unknown field; known fields here: ",
		},
		{
			name:   "bad duration",
			config: "standalone: true\nreporter:\n  heartbeat: 5 minutes\n",
			want:   `nodeguard: config FILE:3: field reporter.heartbeat: "5 minutes" is not a duration such as "30s" or "5m"`,
		},
		{
			name:   "unknown check in the config",
			config: "checks:\n  kmsg:\n    enabled: true\n  nosuch:\n    enabled: true\n",
			want:   `nodeguard: config FILE:4: field checks.nosuch: no check is named "nosuch"; known checks: `,
		},
		{
			name:   "bad rule in the config",
			config: "checks:\n  kmsg:\n    rules:\n    - name: x\n      kind: event\n      reason: X\n      contains: x\n      pattern: 'x('\n",
			want:   "nodeguard: config FILE:8: field checks.kmsg.rules[0].pattern: error parsing regexp: missing closing ): `x(`",
		},
		{
			name: "unknown check flag",
			args: []string{"--check.nosuch"},
			want: "nodeguard: unknown flag: --check.nosuch",
		},
		{
			name: "unknown no-check flag",
			args: []string{"--no-check.nosuch"},
			want: "nodeguard: unknown flag: --no-check.nosuch",
		},
		{
			name: "bad flag value",
			args: []string{"--standalone=maybe"},
			want: `nodeguard: invalid argument "maybe" for "--standalone" flag`,
		},
		{
			name: "bad output flag",
			args: []string{"--output=xml"},
			want: `nodeguard: config flags: field output: "xml" is not one of text, json`,
		},
		{
			name:   "flag over a good file",
			config: "output: json\n",
			args:   []string{"--log-format=yaml"},
			want:   `nodeguard: config flags: field logFormat: "yaml" is not one of json, console`,
		},
		{
			name: "missing config file",
			args: []string{"--config=/nonexistent/nodeguard.yaml"},
			want: "nodeguard: config /nonexistent/nodeguard.yaml: reading the file: open /nonexistent/nodeguard.yaml: no such file or directory",
		},
		{
			name: "stray argument",
			args: []string{"--standalone", "extra"},
			want: `nodeguard: unknown command "extra" for "nodeguard`,
		},
	} {
		// nodeguard with no command runs the agent, as nodeguard run does.
		for _, command := range []string{"", "run"} {
			t.Run(strings.TrimSpace(command+" "+tc.name), func(t *testing.T) {
				args := tc.args
				want := tc.want
				if tc.config != "" {
					path := writeFile(t, "nodeguard.yaml", tc.config)
					args = append([]string{"--config=" + path}, args...)
					want = strings.ReplaceAll(want, "FILE", path)
				}
				if command != "" {
					args = append([]string{command}, args...)
				}
				// Were the agent to start, it must not take a fixed port.
				args = append(args[:len(args):len(args)], "--listen-address=off")
				stdout, stderr, code := runAgent(t, "", args...)
				if code != 2 {
					t.Fatalf("exit code %d, want 2; stderr:\n%s", code, stderr)
				}
				if stdout != "" {
					t.Errorf("stdout is not empty:\n%s", stdout)
				}
				if line := oneLine(t, stderr); !strings.HasPrefix(line, want) {
					t.Errorf("stderr:\n got  %s\n want %s...", line, want)
				}
			})
		}
	}
}

// printed is the part of a replayed finding's JSON line the tests compare.
type printed struct {
	Kind      string `json:"kind"`
	Reason    string `json:"reason"`
	Condition string `json:"condition"`
	Status    string `json:"status"`
	Message   string `json:"message"`
	Line      string `json:"line"`
}

func parseFindings(t *testing.T, stdout string) []printed {
	t.Helper()
	var out []printed
	for _, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		if line == "" {
			continue
		}
		var raw map[string]any
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			t.Fatalf("output line is not JSON: %q: %v", line, err)
		}
		for _, key := range []string{"kind", "reason", "message", "line", "time"} {
			if _, ok := raw[key]; !ok {
				t.Errorf("output line has no %q: %s", key, line)
			}
		}
		var f printed
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
	return out
}

const kernelLog = `[  100.000000] Out of memory: Killed process 1234 (stress) total-vm:10240kB, anon-rss:8192kB
[  150.500000] usb 1-1: new high-speed USB device number 2 using xhci_hcd
[  200.000000] INFO: task containerd:456 blocked for more than 120 seconds.
`

func kernelLogFindings(source string) []printed {
	return []printed{
		{Kind: "event", Reason: "OOMKilling", Message: "Out of memory: Killed process 1234 (stress) total-vm:10240kB, anon-rss:8192kB", Line: source + ":1"},
		{Kind: "event", Reason: "TaskHung", Message: "INFO: task containerd:456 blocked for more than 120 seconds.", Line: source + ":3"},
		{Kind: "condition", Reason: "ContainerRuntimeHung", Condition: "KernelDeadlock", Status: "True", Message: "INFO: task containerd:456 blocked for more than 120 seconds.", Line: source + ":3"},
		{Kind: "condition", Reason: "RuntimeTaskHung", Condition: "ContainerRuntimeUnresponsive", Status: "True", Message: "INFO: task containerd:456 blocked for more than 120 seconds.", Line: source + ":3"},
	}
}

func TestReplay(t *testing.T) {
	logFile := writeFile(t, "kern.log", kernelLog)
	userRules := writeFile(t, "rules.yaml", `checks:
  kmsg:
    conditions:
    - type: WidgetJammed
      reason: WidgetsTurning
      message: every widget turns
    rules:
    - name: widget-jam
      kind: condition
      condition: WidgetJammed
      reason: WidgetJam
      contains: "widget"
      pattern: 'widget \d+ jammed'
`)
	jam := "[  300.000000] nodeguard-test: widget 7 jammed\n"
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  []printed
	}{
		{name: "file", args: []string{logFile}, want: kernelLogFindings(logFile)},
		{name: "stdin", args: []string{"-"}, stdin: kernelLog, want: kernelLogFindings("stdin")},
		{name: "two files", args: []string{logFile, "-"}, stdin: kernelLog, want: append(kernelLogFindings(logFile), kernelLogFindings("stdin")...)},
		{name: "nothing found", args: []string{"-"}, stdin: "[    1.000000] Linux version 6.8.0\n\n"},
		{
			name:  "user rule",
			args:  []string{"--config=" + userRules, "-"},
			stdin: jam,
			want: []printed{{
				Kind: "condition", Reason: "WidgetJam", Condition: "WidgetJammed", Status: "True",
				Message: "nodeguard-test: widget 7 jammed", Line: "stdin:1",
			}},
		},
		{name: "user rule needs its config", args: []string{"-"}, stdin: jam},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runAgent(t, tc.stdin, append([]string{"replay"}, tc.args...)...)
			if code != 0 || stderr != "" {
				t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
			}
			got := parseFindings(t, stdout)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d findings, want %d:\n%s", len(got), len(tc.want), stdout)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("finding %d:\n got  %+v\n want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestReplayErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.log")
	badConfig := writeFile(t, "bad.yaml", "checks:\n  kmsg:\n    disableRules: [nope]\n")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing file", []string{missing}, "nodeguard: replay: open " + missing + ": no such file or directory"},
		{"no file named", nil, "nodeguard: replay: name one or more files, or - for standard input"},
		{"unknown flag", []string{"--bogus", "-"}, "nodeguard: unknown flag: --bogus"},
		{"bad config", []string{"--config=" + badConfig, "-"}, "nodeguard: config " + badConfig + `:3: field checks.kmsg.disableRules: disableRules names "nope", which is no rule`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runAgent(t, "", append([]string{"replay"}, tc.args...)...)
			if code == 0 {
				t.Fatalf("exit code 0, want failure")
			}
			if stdout != "" {
				t.Errorf("stdout is not empty:\n%s", stdout)
			}
			if line := oneLine(t, stderr); !strings.HasPrefix(line, tc.want) {
				t.Errorf("stderr:\n got  %s\n want %s...", line, tc.want)
			}
		})
	}
}

// freePort returns a TCP port on the loopback that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// lockedBuffer is a bytes.Buffer that the process may write while the test
// reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// agentProc is a nodeguard process the test started.
type agentProc struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	exited         chan struct{} // closed when the process has ended
	err            error         // what Wait returned, once exited
}

// startAgent starts the agent standalone with every check off, plus args.
func startAgent(t *testing.T, args ...string) *agentProc {
	t.Helper()
	args = append([]string{"--standalone", "--state-dir=" + t.TempDir(), "--node-name=test-node"}, args...)
	for _, name := range all.Registry.Names() {
		args = append(args, "--no-check."+name)
	}
	a := &agentProc{cmd: exec.Command(agentBin, args...), stdout: &lockedBuffer{}, stderr: &lockedBuffer{}, exited: make(chan struct{})}
	a.cmd.Env = agentEnv()
	a.cmd.Stdout, a.cmd.Stderr = a.stdout, a.stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		a.err = a.cmd.Wait()
		close(a.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-a.exited:
		default:
			a.cmd.Process.Kill()
			<-a.exited
		}
		if t.Failed() {
			t.Logf("agent stderr:\n%s", a.stderr.String())
		}
	})
	return a
}

// waitLog waits until the agent has logged msg.
func (a *agentProc) waitLog(t *testing.T, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(a.stderr.String(), `"msg":"`+msg+`"`) {
		select {
		case <-a.exited:
			t.Fatalf("agent exited before logging %q: %v", msg, a.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not log %q within 10s", msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM, as the kubelet does, and checks that the agent ends
// cleanly within 5s. It returns the agent's log entries.
func (a *agentProc) stop(t *testing.T) []logEntry {
	t.Helper()
	sent := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.exited:
		if a.err != nil {
			t.Fatalf("agent exited with %v after SIGTERM", a.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("agent still running 5s after SIGTERM")
	}
	t.Logf("stopped %v after SIGTERM", time.Since(sent).Round(time.Millisecond))
	if out := a.stdout.String(); out != "" {
		t.Errorf("stdout holds findings with no check on:\n%s", out)
	}
	var entries []logEntry
	for _, line := range strings.Split(strings.TrimSuffix(a.stderr.String(), "\n"), "\n") {
		var e logEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Errorf("stderr line is not a JSON log entry: %q", line)
			continue
		}
		e.raw = line
		entries = append(entries, e)
	}
	var msgs []string
	for _, e := range entries {
		if e.Level != "info" {
			t.Errorf("%s log entry: %s", e.Level, e.raw)
		}
		msgs = append(msgs, e.Msg)
	}
	if len(msgs) < 2 || msgs[0] != "nodeguard started" || msgs[len(msgs)-1] != "nodeguard stopped" {
		t.Errorf("log messages %q, want from \"nodeguard started\" to \"nodeguard stopped\"", msgs)
	}
	return entries
}

type logEntry struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
	raw   string
}

// TestStartAndStop runs the agent with every check off, checks that it
// serves /healthz and /metrics, and stops it.
func TestStartAndStop(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	a := startAgent(t, "--listen-address="+addr)

	client := &http.Client{Timeout: time.Second}
	get := func(path string) (int, string, error) {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body, err := get("/healthz")
		if err == nil && code == http.StatusOK && body == "ok\n" {
			break
		}
		select {
		case <-a.exited:
			t.Fatalf("agent exited before serving /healthz: %v", a.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz not ok within 10s: %d %q %v", code, body, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body, err := get("/metrics"); err != nil || code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics: %d %v, body without go_goroutines", code, err)
	}
	a.stop(t)
	if _, _, err := get("/healthz"); err == nil {
		t.Errorf("%s still serves after the agent stopped", addr)
	}
}

// TestListenAddressOffInConfig checks that "off" in the file turns the HTTP
// server off, as --listen-address=off does; YAML 1.1 would read it as false
// and the agent would fail to listen on "false".
func TestListenAddressOffInConfig(t *testing.T) {
	a := startAgent(t, "--config="+writeFile(t, "nodeguard.yaml", "listenAddress: off\n"))
	a.waitLog(t, "nodeguard started")
	time.Sleep(200 * time.Millisecond) // time for a failed listen to be logged
	a.stop(t)
}

// sharedCorpus is the team's kernel log corpus, outside this module, and
// sharedExtra this project's expectations added to it.
const (
	sharedCorpus = "../../../shared/testdata/kmsg"
	sharedExtra  = "../../pkg/logrules/kernelrules/testdata/shared-kmsg-expect.json"
)

func TestReplayExpect(t *testing.T) {
	if _, err := os.Stat(filepath.Join(sharedCorpus, "expect.json")); err != nil {
		t.Skipf("shared kernel log corpus not available at %s: %v", sharedCorpus, err)
	}
	sharedExpect := filepath.Join(sharedCorpus, "expect.json")
	logFile := writeFile(t, "kern.log", kernelLog)
	dir := filepath.Dir(logFile)
	wrong := filepath.Join(dir, "wrong.json")
	if err := os.WriteFile(wrong, []byte(`{"kern.log": {"required": ["OOMKilling", "KernelOops"], "counts": {"TaskHung": 2},
		"contains": {"OOMKilling": ["pod UID"]}, "optional": ["TaskHung", "KernelDeadlock", "ContainerRuntimeUnresponsive"]}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	vendor := writeFile(t, "vendor.yaml", `checks:
  kmsg:
    rules:
    - name: acme-fw-fault
      kind: event
      reason: AcmeFirmwareFault
      contains: "acme_nic"
      pattern: 'acme_nic \S+: firmware fault'
`)
	vendorLog := filepath.Join(dir, "acme.log")
	if err := os.WriteFile(vendorLog, []byte("[  9.000000] acme_nic 0000:3b:00.0: firmware fault 0x17, resetting\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vendorExpect := filepath.Join(dir, "acme.json")
	if err := os.WriteFile(vendorExpect, []byte(`{"acme.log": {"required": ["AcmeFirmwareFault"], "contains": {"AcmeFirmwareFault": ["0x17"]}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   []string // lines stdout must hold
		stderrIn string   // what stderr must hold; "" for empty
	}{
		{
			name: "the shared corpus passes", args: []string{"--expect", sharedExpect, "--expect", sharedExtra},
			stdout: []string{"ok   " + filepath.Join(sharedCorpus, "oops-old.log"), "10 passed, 0 failed"},
		},
		{
			name: "a wrong expectation fails, naming the file and why", args: []string{"--expect", wrong, logFile}, code: 1,
			stdout: []string{
				"FAIL " + logFile + `: missing KernelOops; TaskHung: 1 found, 2 expected; OOMKilling: no message holds "pod UID"`,
				"0 passed, 1 failed",
			},
			stderrIn: logFile + ":1 found OOMKilling: Out of memory: Killed process 1234",
		},
		{
			name: "a log without an entry fails", args: []string{"--expect", vendorExpect, logFile}, code: 1,
			stdout:   []string{"FAIL " + logFile + `: no entry "kern.log" in ` + vendorExpect},
			stderrIn: "found TaskHung",
		},
		{
			name: "a vendor rule from the config", args: []string{"--config", vendor, "--expect", vendorExpect},
			stdout: []string{"ok   " + vendorLog, "1 passed, 0 failed"},
		},
		{
			name: "the vendor rule needs its config", args: []string{"--expect", vendorExpect}, code: 1,
			stdout: []string{"FAIL " + vendorLog + ": missing AcmeFirmwareFault; AcmeFirmwareFault: no message holds \"0x17\""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runAgent(t, "", append([]string{"replay"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			lines := strings.Split(stdout, "\n")
			for _, want := range tt.stdout {
				if !slices.Contains(lines, want) {
					t.Errorf("stdout lacks the line\n  %s\nstdout:\n%s", want, stdout)
				}
			}
			if tt.stderrIn == "" && stderr != "" || !strings.Contains(stderr, tt.stderrIn) {
				t.Errorf("stderr:\n%s\nwant it to hold %q", stderr, tt.stderrIn)
			}
		})
	}
}

func TestReplayExpectBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	unknownKey := write("unknown.json", "{\n \"a.log\": {\n  \"required\": [],\n  \"contain\": {}\n }\n}\n")
	badType := write("type.json", "{\n \"a.log\": {\"counts\": {\"X\": \"one\"}}\n}\n")
	noLog := write("nolog.json", `{"absent.log": {"required": []}}`)
	log := write("a.log", "[ 1.0] hello\n")
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown key", []string{"--expect", unknownKey, log}, "nodeguard: expect " + unknownKey + `:4: entry "a.log": field contain: is not one of required, optional, counts, contains`},
		{"wrong type", []string{"--expect", badType, log}, "nodeguard: expect " + badType + `:2: entry "a.log": field counts: is string, want a whole number`},
		{"missing expect file", []string{"--expect", filepath.Join(dir, "none.json")}, "nodeguard: reading expectations: open " + filepath.Join(dir, "none.json")},
		{"entry without its log", []string{"--expect", noLog}, "nodeguard: expect " + noLog + `: entry "absent.log": no log to judge: stat ` + filepath.Join(dir, "absent.log")},
		{"missing log named", []string{"--expect", noLog, filepath.Join(dir, "gone.log")}, "nodeguard: replay: open " + filepath.Join(dir, "gone.log")},
		{"standard input", []string{"--expect", noLog, "-"}, "nodeguard: replay: --expect judges files by name; standard input has none"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runAgent(t, "", append([]string{"replay"}, tt.args...)...)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			if stdout != "" {
				t.Errorf("stdout is not empty:\n%s", stdout)
			}
			if line := oneLine(t, stderr); !strings.HasPrefix(line, tt.want) {
				t.Errorf("stderr:\n got  %s\n want %s...", line, tt.want)
			}
		})
	}
}

// TestTestingRulesDocExample runs the worked example of
// docs/testing-rules.md: its config, sample logs and expectations, and the
// two console sessions, so that the page shows what the command does.
func TestTestingRulesDocExample(t *testing.T) {
	raw, err := os.ReadFile("../../docs/testing-rules.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	block := func(after string) string {
		t.Helper()
		_, rest, ok := strings.Cut(doc, after)
		if !ok {
			t.Fatalf("docs/testing-rules.md has no %q", after)
		}
		body, _, _ := strings.Cut(rest, "```")
		return body
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "rules-test"), 0o700); err != nil {
		t.Fatal(err)
	}
	put := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	put("nodeguard.yaml", block("```yaml\n# nodeguard.yaml\n"))
	// The first console block shows the files, each after its `$ cat`.
	files := strings.Split(block("```console\n$ cat "), "\n$ cat ")
	for _, f := range files {
		name, content, _ := strings.Cut(f, "\n")
		put(name, content)
	}
	if len(files) != 3 {
		t.Fatalf("the example shows %d files, want the two logs and expect.json", len(files))
	}
	for _, session := range []struct {
		command string
		args    []string
		code    int
	}{
		{"$ nodeguard replay --config nodeguard.yaml --expect rules-test/expect.json\n", []string{"--config", "nodeguard.yaml", "--expect", "rules-test/expect.json"}, 0},
		{"$ nodeguard replay --expect rules-test/expect.json 2>&1; echo \"exit $?\"\n", []string{"--expect", "rules-test/expect.json"}, 1},
	} {
		want := block(session.command)
		cmd := exec.Command(agentBin, append([]string{"replay"}, session.args...)...)
		cmd.Dir, cmd.Env = dir, agentEnv()
		out, _ := cmd.CombinedOutput()
		got := string(out)
		if session.code != 0 {
			got += fmt.Sprintf("exit %d\n", cmd.ProcessState.ExitCode())
		}
		if cmd.ProcessState.ExitCode() != session.code || got != want {
			t.Errorf("%s printed (exit %d)\n%s\nthe page shows\n%s", session.command, cmd.ProcessState.ExitCode(), got, want)
		}
	}
}

const testVersion = "v0.0.0-test"

// Help and version follow kubectl's and helm's conventions: asked for, they
// print to stdout and exit 0; the help names every subcommand.
func TestHelpAndVersion(t *testing.T) {
	commands := []string{"\n  run ", "\n  check ", "\n  replay ", "\n  bundle ", "\n  version ", "\n  completion ", "\n  help "}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"--help"}, append(commands, "--config", "--no-check.kmsg")},
		{[]string{"-h"}, commands},
		{[]string{"help"}, append(commands, "--kubeconfig")},
		{[]string{"-help"}, commands},
		{[]string{"replay", "-h"}, []string{"nodeguard replay [flags] FILE...", "--expect"}},
		{[]string{"help", "check"}, []string{"nodeguard check [flags]", "--wait"}},
		{[]string{"bundle", "--help"}, []string{"nodeguard bundle [-o FILE] [flags]", "-o, --file", "--config"}},
		{[]string{"run", "--help"}, []string{"nodeguard run [flags]", "--config"}},
		{[]string{"version"}, []string{"nodeguard " + testVersion, "go version: go1.", "revision:"}},
		{[]string{"--version"}, []string{"nodeguard " + testVersion}},
		{[]string{"-version"}, []string{"nodeguard " + testVersion}},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			stdout, stderr, code := runAgent(t, "", tt.args...)
			if code != 0 {
				t.Fatalf("exit code %d, want 0; stderr:\n%s", code, stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout does not say %q:\n%s", w, stdout)
				}
			}
		})
	}
}

// TestSingleDashFlags: Go's flag package, which nodeguard used before
// cobra, took -config as --config; a unit file or script written then
// keeps working, told on stderr to move on.
func TestSingleDashFlags(t *testing.T) {
	userRules := writeFile(t, "rules.yaml", "checks:\n  kmsg:\n    rules:\n    - name: widget\n      kind: event\n      reason: WidgetJam\n      contains: widget\n      pattern: 'widget \\d+ jammed'\n")
	for _, tt := range []struct {
		name   string
		args   []string
		stdin  string
		code   int
		stdout string // what stdout must hold
		stderr string // all of stderr
	}{
		{
			name: "a flag and its value", args: []string{"replay", "-config", userRules, "-"}, stdin: "widget 7 jammed\n",
			stdout: `"reason":"WidgetJam"`, stderr: "nodeguard: -config is deprecated: use --config\n",
		},
		{
			name: "flag=value, told once", args: []string{"replay", "-config=" + userRules, "-npd-rules=/nonexistent.json", "-npd-rules=/nonexistent.json", "-"}, code: 2,
			stderr: "nodeguard: -config is deprecated: use --config\nnodeguard: -npd-rules is deprecated: use --npd-rules\n" +
				"nodeguard: npdRules[0]: reading NPD rules: open /nonexistent.json: no such file or directory (value /nonexistent.json)\n",
		},
		{
			name: "a per-check flag", args: []string{"-check.nosuch"}, code: 2,
			stderr: "nodeguard: unknown flag: --check.nosuch\n",
		},
		{
			name: "a value that starts with a dash is left alone", args: []string{"check", "-output", "-standalone"}, code: 2,
			stderr: "nodeguard: -output is deprecated: use --output\n" + `nodeguard: config flags: field output: "-standalone" is not one of text, json` + "\n",
		},
		{
			name: "nothing after --", args: []string{"replay", "--", "-config"}, code: 2,
			stderr: "nodeguard: replay: open -config: no such file or directory\n",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runAgent(t, tt.stdin, tt.args...)
			if code != tt.code || stderr != tt.stderr || !strings.Contains(stdout, tt.stdout) {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nwant it to hold %s\nstderr:\n%s\nwant:\n%s", code, tt.code, stdout, tt.stdout, stderr, tt.stderr)
			}
		})
	}
}

// bashCompletion is the bash-completion package's library, which bash
// completion scripts assume.
const bashCompletion = "/usr/share/bash-completion/bash_completion"

// TestCompletion: cobra's completion scripts load, and what they ask the
// binary (its hidden __complete command) completes nodeguard's own flags
// and values.
func TestCompletion(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("needs bash")
	}
	// The script wants bash-completion's _get_comp_words_by_ref, as
	// kubectl's does; without the package, a stand-in that splits no words
	// at = or :.
	prelude := `_get_comp_words_by_ref() { cur=${COMP_WORDS[COMP_CWORD]}; prev=${COMP_WORDS[COMP_CWORD-1]}; words=("${COMP_WORDS[@]}"); cword=$COMP_CWORD; }; `
	if _, err := os.Stat(bashCompletion); err == nil {
		prelude = "source " + bashCompletion + "; "
	}
	// PATH so that the script's "nodeguard" is the binary under test.
	script := prelude + `source <(nodeguard completion bash) && complete -p nodeguard && ` +
		`COMP_WORDS=(nodeguard check --no-check.k) COMP_CWORD=2 COMP_LINE='nodeguard check --no-check.k' COMP_POINT=${#COMP_LINE} && ` +
		`__start_nodeguard && printf '%s
' "${COMPREPLY[@]}"`
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = append(agentEnv(), "PATH="+filepath.Dir(agentBin)+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	for _, want := range []string{"-F __start_nodeguard nodeguard", "--no-check.kmsg", "--no-check.kubelet"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("bash printed no %q:\n%s", want, out)
		}
	}
	for _, shell := range []string{"zsh", "fish", "powershell"} {
		stdout, stderr, code := runAgent(t, "", "completion", shell)
		if code != 0 || !strings.Contains(stdout, "__complete") {
			t.Errorf("completion %s: exit %d, no __complete in the script; stderr:\n%s", shell, code, stderr)
		}
	}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"--output", ""}, []string{"text", "json"}},
		{[]string{"check", "--log-format", ""}, []string{"json", "console"}},
		{[]string{"--no-check.c"}, []string{"--no-check.cri"}},
		{[]string{""}, []string{"bundle", "check", "replay", "run", "version"}},
	} {
		stdout, stderr, code := runAgent(t, "", append([]string{"__complete"}, tt.args...)...)
		lines := strings.Split(stdout, "\n")
		for _, w := range tt.want {
			found := false
			for _, l := range lines {
				found = found || l == w || strings.HasPrefix(l, w+"\t")
			}
			if code != 0 || !found {
				t.Errorf("__complete %q: exit %d, no %q in\n%s%s", tt.args, code, w, stdout, stderr)
			}
		}
	}
}

func TestBuildInfoGauge(t *testing.T) {
	reg := prometheus.NewRegistry()
	b := build{Version: "v1.2.3", Revision: "abc", GoVersion: "go1.26.0", Date: "unknown"}
	reg.MustRegister(b.collector())
	got, err := testutil.GatherAndCount(reg, "nodeguard_build_info")
	if err != nil || got != 1 {
		t.Fatalf("nodeguard_build_info series: %d, %v", got, err)
	}
	want := `# HELP nodeguard_build_info 1, labelled with the version, revision and Go version nodeguard was built from.
# TYPE nodeguard_build_info gauge
nodeguard_build_info{goversion="go1.26.0",revision="abc",version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "nodeguard_build_info"); err != nil {
		t.Error(err)
	}
}

// TestBundleCommand: -o - writes the tar.gz to stdout, -o FILE to the file
// and says so on stderr; a bad config exits 2 and writes no file.
func TestBundleCommand(t *testing.T) {
	dir := t.TempDir()
	quick := []string{"--wait=100ms", "--state-dir=" + dir}
	for _, reg := range all.Registry {
		quick = append(quick, "--no-check."+reg.Name)
	}
	stdout, stderr, code := runAgent(t, "", append([]string{"bundle", "-o", "-"}, quick...)...)
	if code != 0 || !strings.HasPrefix(stdout, "\x1f\x8b") {
		t.Fatalf("bundle -o -: exit %d, %d bytes not gzip; stderr:\n%s", code, len(stdout), stderr)
	}
	file := filepath.Join(dir, "b.tar.gz")
	_, stderr, code = runAgent(t, "", append([]string{"bundle", "-o", file}, quick...)...)
	b, err := os.ReadFile(file)
	if code != 0 || err != nil || !bytes.HasPrefix(b, []byte("\x1f\x8b")) || !strings.Contains(stderr, "wrote "+file) {
		t.Fatalf("bundle -o FILE: exit %d, %v; stderr:\n%s", code, err, stderr)
	}
	bad := filepath.Join(dir, "bad.tar.gz")
	_, stderr, code = runAgent(t, "", "bundle", "-o", bad, "--config=/nonexistent/nodeguard.yaml")
	if _, err := os.Stat(bad); code != 2 || err == nil {
		t.Errorf("bundle with a missing config: exit %d, file %v; stderr:\n%s", code, err, stderr)
	}
}
