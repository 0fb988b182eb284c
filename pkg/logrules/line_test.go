package logrules

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestKernel(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{"6,1,2,-;x", true},
		{"[1.0] x", true},
		{"x", true},
		{"Nov 23 10:46:01 node-1 kernel: x", true},
		{"Nov 23 10:46:01 node-1 kubelet[1402]: x", false},
	}
	for _, tt := range tests {
		if got := ParseKernelLine(tt.line).Kernel(); got != tt.want {
			t.Errorf("ParseKernelLine(%q).Kernel() = %v, want %v", tt.line, got, tt.want)
		}
	}
}

func TestParseKernelLine(t *testing.T) {
	plain := func(s string) ParsedLine { return ParsedLine{Format: FormatPlain, Text: s, Priority: -1} }
	tests := []struct {
		name string
		in   string
		want ParsedLine
	}{
		// /dev/kmsg records.
		{"kmsg", "6,1234,5678901,-;eth0: renamed from veth1",
			ParsedLine{Format: FormatKmsg, Text: "eth0: renamed from veth1", Monotonic: 5678901 * time.Microsecond, HasTime: true, Priority: 6, Seq: 1234}},
		{"kmsg without flags", "3,7,1000000;I/O error, dev sda, sector 0",
			ParsedLine{Format: FormatKmsg, Text: "I/O error, dev sda, sector 0", Monotonic: time.Second, HasTime: true, Priority: 3, Seq: 7}},
		{"kmsg continuation flag", "4,8,2,c;continued",
			ParsedLine{Format: FormatKmsg, Text: "continued", Monotonic: 2 * time.Microsecond, HasTime: true, Priority: 4, Seq: 8}},
		{"kmsg with caller id", "6,9,3,-,caller=T1234;nvme nvme0: 8/0/0 default/read/poll queues",
			ParsedLine{Format: FormatKmsg, Text: "nvme nvme0: 8/0/0 default/read/poll queues", Monotonic: 3 * time.Microsecond, HasTime: true, Priority: 6, Seq: 9}},
		{"kmsg priority holds the facility", "14,10,0,-;user message", // facility 1 (user), level 6
			ParsedLine{Format: FormatKmsg, Text: "user message", HasTime: true, Priority: 6, Seq: 10}},
		{"kmsg facility kern level 0", "0,11,5,-;Kernel panic - not syncing: Fatal exception",
			ParsedLine{Format: FormatKmsg, Text: "Kernel panic - not syncing: Fatal exception", Monotonic: 5 * time.Microsecond, HasTime: true, Priority: 0, Seq: 11}},
		{"kmsg facility daemon level 3", "27,12,5,-;systemd-journald: x", // 3<<3 | 3
			ParsedLine{Format: FormatKmsg, Text: "systemd-journald: x", Monotonic: 5 * time.Microsecond, HasTime: true, Priority: 3, Seq: 12}},
		{"kmsg continuation lines dropped", "3,1201,5120100520,-;blk_update_request: I/O error, dev sda\n SUBSYSTEM=block\n DEVICE=b8:0",
			ParsedLine{Format: FormatKmsg, Text: "blk_update_request: I/O error, dev sda", Monotonic: 5120100520 * time.Microsecond, HasTime: true, Priority: 3, Seq: 1201}},
		{"kmsg trailing newline", "6,1,2,-;hello\n",
			ParsedLine{Format: FormatKmsg, Text: "hello", Monotonic: 2 * time.Microsecond, HasTime: true, Priority: 6, Seq: 1}},
		{"kmsg CRLF", "6,1,2,-;hello\r\n",
			ParsedLine{Format: FormatKmsg, Text: "hello", Monotonic: 2 * time.Microsecond, HasTime: true, Priority: 6, Seq: 1}},
		{"kmsg empty message", "6,1,2,-;",
			ParsedLine{Format: FormatKmsg, Text: "", Monotonic: 2 * time.Microsecond, HasTime: true, Priority: 6, Seq: 1}},
		{"kmsg message with semicolons", "6,1,2,-;a;b;c",
			ParsedLine{Format: FormatKmsg, Text: "a;b;c", Monotonic: 2 * time.Microsecond, HasTime: true, Priority: 6, Seq: 1}},
		{"kmsg largest representable time", "6,1,9223372036854775,-;x",
			ParsedLine{Format: FormatKmsg, Text: "x", Monotonic: 9223372036854775 * time.Microsecond, HasTime: true, Priority: 6, Seq: 1}},

		// dmesg output.
		{"dmesg", "[  12.345678] EXT4-fs (sda1): mounted filesystem",
			ParsedLine{Format: FormatDmesg, Text: "EXT4-fs (sda1): mounted filesystem", Monotonic: 12345678 * time.Microsecond, HasTime: true, Priority: -1}},
		{"dmesg with level", "<3>[ 1201.000100] blk_update_request: I/O error, dev xvdf, sector 2048",
			ParsedLine{Format: FormatDmesg, Text: "blk_update_request: I/O error, dev xvdf, sector 2048", Monotonic: 1201*time.Second + 100*time.Microsecond, HasTime: true, Priority: 3}},
		{"dmesg level holds the facility", "<14>[    1.500000] user",
			ParsedLine{Format: FormatDmesg, Text: "user", Monotonic: 1500 * time.Millisecond, HasTime: true, Priority: 6}},
		{"dmesg no space after bracket", "[5.25]text",
			ParsedLine{Format: FormatDmesg, Text: "text", Monotonic: 5250 * time.Millisecond, HasTime: true, Priority: -1}},
		{"dmesg only one space taken", "[    0.000000]  leading space kept",
			ParsedLine{Format: FormatDmesg, Text: " leading space kept", HasTime: true, Priority: -1}},
		{"dmesg whole seconds", "[ 42] x",
			ParsedLine{Format: FormatDmesg, Text: "x", Monotonic: 42 * time.Second, HasTime: true, Priority: -1}},
		{"dmesg nanosecond fraction", "[1.000000001] x",
			ParsedLine{Format: FormatDmesg, Text: "x", Monotonic: time.Second + 1, HasTime: true, Priority: -1}},
		{"dmesg printk caller kept in text", "[   34.415494][    T1] Oops: Oops: 0000 [#1] SMP PTI",
			ParsedLine{Format: FormatDmesg, Text: "[    T1] Oops: Oops: 0000 [#1] SMP PTI", Monotonic: 34415494 * time.Microsecond, HasTime: true, Priority: -1}},
		{"dmesg empty text", "[ 1.0]",
			ParsedLine{Format: FormatDmesg, Text: "", Monotonic: time.Second, HasTime: true, Priority: -1}},

		// Plain text, including framing that is almost right.
		{"plain", "Killed process 2100 (memhog)", plain("Killed process 2100 (memhog)")},
		{"plain trailing newline trimmed", "hello\r\n", plain("hello")},
		{"empty", "", plain("")},

		// syslog files (kern.log, messages).
		{"syslog with dmesg time", "Nov 23 10:46:01 node-1 kernel: [12345.678901] INFO: task dockerd:1022 blocked for more than 120 seconds.",
			ParsedLine{Format: FormatSyslog, Text: "INFO: task dockerd:1022 blocked for more than 120 seconds.", Monotonic: 12345678901 * time.Microsecond, HasTime: true, Priority: -1, Program: "kernel"}},
		{"syslog without dmesg time", "Jun  4 01:02:03 ip-10-0-0-1 kernel: Killed process 2100 (memhog)",
			ParsedLine{Format: FormatSyslog, Text: "Killed process 2100 (memhog)", Priority: -1, Program: "kernel"}},
		{"syslog RFC 3339", "2026-11-23T10:00:00.123456+00:00 node-1 kernel: [    1.500000] x",
			ParsedLine{Format: FormatSyslog, Text: "x", Monotonic: 1500 * time.Millisecond, HasTime: true, Priority: -1, Program: "kernel"}},
		{"syslog other program with pid", "Nov 23 10:46:01 node-1 containerd[812]: Kernel panic - not syncing: not the kernel's",
			ParsedLine{Format: FormatSyslog, Text: "Kernel panic - not syncing: not the kernel's", Priority: -1, Program: "containerd"}},
		{"syslog with an overflowing dmesg time", "Nov 23 10:46:01 node-1 kernel: [9223372037.0] x",
			ParsedLine{Format: FormatSyslog, Text: "[9223372037.0] x", Priority: -1, Program: "kernel"}},
		{"syslog bad month is plain", "Foo 23 10:46:01 node-1 kernel: x", plain("Foo 23 10:46:01 node-1 kernel: x")},
		{"syslog without tag is plain", "Nov 23 10:46:01 node-1 no tag here", plain("Nov 23 10:46:01 node-1 no tag here")},
		{"dmesg -T human time", "[Sat Feb  5 13:17:57 2022] INFO: task x:1 blocked", plain("[Sat Feb  5 13:17:57 2022] INFO: task x:1 blocked")},
		{"kmsg too few fields", "6,1234;msg", plain("6,1234;msg")},
		{"kmsg non-numeric priority", "x,1,2,-;msg", plain("x,1,2,-;msg")},
		{"kmsg negative priority", "-1,1,2,-;msg", plain("-1,1,2,-;msg")},
		{"kmsg negative seq", "6,-1,2,-;msg", plain("6,-1,2,-;msg")},
		{"kmsg negative time", "6,1,-2,-;msg", plain("6,1,-2,-;msg")},
		{"kmsg time overflows int64", "6,1,99999999999999999999,-;msg", plain("6,1,99999999999999999999,-;msg")},
		{"kmsg time overflows a Duration", "6,1,9223372036854776,-;msg", plain("6,1,9223372036854776,-;msg")},
		{"kmsg seq overflows uint64", "6,18446744073709551616,2,-;msg", plain("6,18446744073709551616,2,-;msg")},
		{"semicolon first", ";msg", plain(";msg")},
		{"prose with commas and semicolon", "Opts: errors=remount-ro,data=ordered; x", plain("Opts: errors=remount-ro,data=ordered; x")},
		{"dmesg unclosed bracket", "[  12.345678 oops", plain("[  12.345678 oops")},
		{"dmesg non-numeric stamp", "[abc] x", plain("[abc] x")},
		{"dmesg empty stamp", "[] x", plain("[] x")},
		{"dmesg negative seconds", "[-1.5] x", plain("[-1.5] x")},
		{"dmesg negative fraction", "[1.-5] x", plain("[1.-5] x")},
		{"dmesg fraction too long", "[1.0000000001] x", plain("[1.0000000001] x")},
		{"dmesg seconds overflow a Duration", "[9223372037.000000] x", plain("[9223372037.000000] x")},
		{"dmesg seconds plus fraction overflow a Duration", "[9223372036.999999999] x", plain("[9223372036.999999999] x")},
		{"level without timestamp", "<3>I/O error, dev sda", plain("<3>I/O error, dev sda")},
		{"empty level", "<>[1.0] x", plain("<>[1.0] x")},
		{"non-numeric level", "<x>[1.0] x", plain("<x>[1.0] x")},
		{"negative level", "<-3>[1.0] x", plain("<-3>[1.0] x")},
		{"unclosed level", "<3[1.0] x", plain("<3[1.0] x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseKernelLine(tt.in)
			if got != tt.want {
				t.Errorf("ParseKernelLine(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

// TestParseKernelLineAllocs: parsing is on the path of every line.
func TestParseKernelLineAllocs(t *testing.T) {
	for _, in := range []string{
		"6,1234,5678901,-;eth0: renamed from veth1",
		"<3>[ 1201.000100] blk_update_request: I/O error, dev xvdf, sector 2048",
		"Nov 23 10:46:01 node-1 kernel: [ 1.5] hello",
		"plain text",
	} {
		if n := testing.AllocsPerRun(100, func() { _ = ParseKernelLine(in) }); n != 0 {
			t.Errorf("ParseKernelLine(%q) allocates %v times", in, n)
		}
	}
}

// TestParseKernelLineTextIsInput: the text is always a piece of the input,
// never rebuilt.
func TestParseKernelLineTextIsInput(t *testing.T) {
	for _, in := range []string{"6,1,2,-;abc", "[1.0] abc", "<4>[1.0] abc", "Nov 23 10:46:01 h kernel: [1.0] abc", "abc"} {
		if p := ParseKernelLine(in); !strings.HasSuffix(in, p.Text) {
			t.Errorf("ParseKernelLine(%q).Text = %q, not the end of the input", in, p.Text)
		}
	}
}

// FuzzDigits: the fast path reads what strconv reads, or leaves it to
// strconv.
func FuzzDigits(f *testing.F) {
	for _, s := range []string{"0", "12345", "000000001", "999999999999999999", "1234567890123456789", "+5", "-0", "", "1a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := digits(s)
		if !ok {
			return
		}
		want, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n != want {
			t.Fatalf("digits(%q) = %d, strconv says %d, %v", s, n, want, err)
		}
	})
}
