package logrules

import (
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nodeguard/nodeguard/pkg/finding"
)

// searchEach is what the engine did before the matcher: one substring
// search per literal, folding ASCII case where the literal does.
func searchEach(lits []literal, line string) []int32 {
	var out []int32
	for i, l := range lits {
		if strings.Contains(line, l.text) || (l.fold && containsFold(line, l.text)) {
			out = append(out, int32(i))
		}
	}
	return out
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if asciiEqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

func scanAll(m *matcher, line string) []int32 {
	h := make(hits, (len(m.lits)+63)/64)
	m.scan(line, h)
	var out []int32
	for i := range m.lits {
		if h.has(int32(i)) {
			out = append(out, int32(i))
		}
	}
	return out
}

// ruleLiterals are literals of the shapes rule sets hold: overlapping ones
// ("ink " in "ink is"), one a suffix of another, the same text folded and
// not, one byte long, and punctuation.
var ruleLiterals = []literal{
	{text: "Killed process"}, {text: "ink is"}, {text: "ink "}, {text: "link is down", fold: true},
	{text: ": link down", fold: true}, {text: "XFS ("}, {text: "nvme"}, {text: "---[ end "}, {text: "oom"},
	{text: "Task"}, {text: "blocked for more than"}, {text: " blocked for more than "}, {text: "I/O error"},
	{text: "Buffer I/O error on dev"}, {text: "EDAC"}, {text: "edac", fold: true}, {text: "x"},
	{text: "q", fold: true}, {text: "+0x"}, {text: ": ("}, {text: "ÿ\xff"}, {text: "aaa"}, {text: "aa"},
}

// TestMatcherFindsWhatSearchFound replays every corpus line, and random
// ones built from the literals' own bytes, through the matcher and through
// one search per literal: they must find the same literals.
func TestMatcherFindsWhatSearchFound(t *testing.T) {
	m := newMatcher(ruleLiterals)
	var lines []string
	for _, log := range corpusLogs(t) {
		lines = append(lines, strings.Split(log, "\n")...)
	}
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte("Kk ilnsI/O:(x+0aAqQ-[e]\xffÿ")
	for range 20000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		// Now and then a literal whole, in a random case.
		if r.IntN(3) == 0 {
			l := ruleLiterals[r.IntN(len(ruleLiterals))].text
			if r.IntN(2) == 0 {
				l = strings.ToUpper(l)
			}
			at := r.IntN(len(b) + 1)
			b = append(b[:at], append([]byte(l), b[at:]...)...)
		}
		lines = append(lines, string(b))
	}
	if len(lines) < 1000 {
		t.Fatalf("only %d lines to compare", len(lines))
	}
	for _, line := range lines {
		if got, want := scanAll(m, line), searchEach(ruleLiterals, line); !slices.Equal(got, want) {
			t.Fatalf("on %q the matcher found %v, one search per literal %v", line, got, want)
		}
	}
}

// FuzzMatcher: for any line and any literal, the matcher and a search of
// each literal agree.
func FuzzMatcher(f *testing.F) {
	f.Add("eth0: NIC Link is Down", "link is", true)
	f.Add("aaaa", "aa", false)
	f.Add("XFS (dm-0): Corruption", "XFS (", false)
	f.Add("\xff\xfe", "\xfe", true)
	f.Fuzz(func(t *testing.T, line, lit string, fold bool) {
		if lit == "" {
			return
		}
		lits := append(slices.Clone(ruleLiterals), literal{text: lit, fold: fold})
		m := newMatcher(lits)
		if got, want := scanAll(m, line), searchEach(lits, line); !slices.Equal(got, want) {
			t.Fatalf("on %q the matcher found %v, one search per literal %v", line, got, want)
		}
	})
}

// FuzzRequiredLiterals: a line a pattern matches holds, of each set of
// literals derived from the pattern, one literal; else the prefilter
// would hide a match.
func FuzzRequiredLiterals(f *testing.F) {
	for _, seed := range []struct{ pattern, line string }{
		{`[Ll]ink is [Dd]own`, "eth0: NIC Link is Down"},
		{`(?i)oops`, "OOPS"},
		{`(?i)kelvin`, "\u212aelvin"},
		{`(?i)sus`, "\u017fu\u017f"},
		{`XFS \([^)]+\): (?:metadata I/O error|Corruption|.*[Ss]hut(?:ting)? ?down)`, "XFS (dm-0): Shutting down filesystem"},
		{`nvme\S* ?\S*: (?:I/O \d+ QID \d+ timeout|controller is down)`, "nvme nvme0: controller is down"},
		{`(?:task [\S ]+:\w+ blocked for more than \w+ seconds\.)$`, "task a b:1 blocked for more than 120 seconds."},
		{`a\bb|c$d`, "ab"},
		{`(?i)é+x`, "ÉX"},
		{`(ab|cd)+e{2,}`, "cdabee"},
		{`general protection fault[:,] `, "general protection fault, probably for non-canonical address"},
		{`(?i)fault[a-c]x`, "FAULTBX"},
	} {
		f.Add(seed.pattern, seed.line)
	}
	f.Fuzz(func(t *testing.T, pattern, line string) {
		re, err := regexp.Compile(pattern)
		if err != nil || !re.MatchString(line) {
			return
		}
		for _, set := range requiredGroups(pattern) {
			if len(searchEach(set, line)) == 0 {
				t.Fatalf("%q matches %q, which holds none of %v", pattern, line, set)
			}
		}
	})
}

// FuzzSplitBranches: a line matches a pattern exactly when it matches one
// of the branches it is split into, and a line a branch matches holds one
// literal of each set derived from the branch.
func FuzzSplitBranches(f *testing.F) {
	for _, seed := range []struct{ pattern, line string }{
		{`(?:\bI/O error, dev \S+|Buffer I/O error on (?:dev|device) \S+|end_request: I/O error)`, "Buffer I/O error on dev sda1, logical block 0"},
		{`(?i)oops|panic`, "OOPS"},
		{`(a|b)+|^c$`, "c"},
		{`((x)|(?i:Y))`, "y"},
		{`\bfoo|bar\b|(?m:^baz$)`, "q\nbaz"},
	} {
		f.Add(seed.pattern, seed.line)
	}
	f.Fuzz(func(t *testing.T, pattern, line string) {
		whole, err := regexp.Compile(pattern)
		if err != nil {
			return
		}
		branches := splitBranches(pattern)
		if branches == nil {
			return
		}
		any := false
		for _, b := range branches {
			if !b.re.MatchString(line) {
				continue
			}
			any = true
			for _, set := range b.derived {
				if len(searchEach(set, line)) == 0 {
					t.Fatalf("branch %q of %q matches %q, which holds none of %v", b.re, pattern, line, set)
				}
			}
		}
		if want := whole.MatchString(line); any != want {
			t.Fatalf("%q matches %q: %v; its branches: %v", pattern, line, want, any)
		}
	})
}

func TestSplitBranches(t *testing.T) {
	tests := []struct {
		pattern string
		want    []string // each branch's best literal
	}{
		{`(?:\bI/O error, dev \S+|Buffer I/O error on (?:dev|device) \S+|end_request: I/O error)`,
			[]string{"I/O error, dev ", "Buffer I/O error on dev", "end_request: I/O error"}},
		{`(panic|(?i)oom)`, []string{"panic", "oom"}},
		{`(?i)(?:port down|nic down)`, []string{"port down", "nic down"}},
		// (?i) reaches past the bar; cut there, "b" would not fold.
		{`a(?i)x|b`, nil},
		{`[|(]x|y\|z`, []string{"x", "y|z"}},
		{`Killed process \d+`, nil},
		{`a|b|c|d|e|f|g|h|i`, nil},
	}
	for _, tt := range tests {
		var got []string
		for _, b := range splitBranches(tt.pattern) {
			got = append(got, requiredLiterals(b.re.String())[0].text)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("splitBranches(%q): branches requiring %q, want %q", tt.pattern, got, tt.want)
		}
	}
}

func TestRequiredGroups(t *testing.T) {
	tests := []struct {
		pattern string
		want    [][]literal
	}{
		{`Killed process \d+ \(`, [][]literal{{{text: "Killed process "}}}},
		{`[Ll]ink is [Dd]own`, [][]literal{{{text: "link is down", fold: true}}}},
		// Go folds k with the Kelvin sign: the literal stops short of it.
		{`(?i)kernel panic`, [][]literal{{{text: "ernel panic", fold: true}}}},
		{`foo|(?i)bar`, [][]literal{{{text: "foo"}, {text: "bar", fold: true}}}},
		// Both are required; the longer literals filter better.
		{`XFS \(\S+\): (?:Corruption|.*shut down)`, [][]literal{{{text: "Corruption"}, {text: "shut down"}}, {{text: "XFS ("}}}},
		// A small class after a run spells out the run's endings.
		{`protection fault[:,] `, [][]literal{{{text: "protection fault,"}, {text: "protection fault:"}}}},
		{`fault[^:]`, [][]literal{{{text: "fault"}}}},
		{`a*`, nil},
		{`foo|.*`, nil},
	}
	for _, tt := range tests {
		if got := requiredGroups(tt.pattern); !slices.EqualFunc(got, tt.want, slices.Equal) {
			t.Errorf("requiredGroups(%q) = %v, want %v", tt.pattern, got, tt.want)
		}
	}
}

// TestMatcherAllocatesNothing: not for one-byte literals either, nor folded
// ones.
func TestMatcherAllocatesNothing(t *testing.T) {
	m := newMatcher(ruleLiterals)
	h := make(hits, (len(ruleLiterals)+63)/64)
	line := "XFS (dm-0): Ending clean mount; eth0: NIC Link is Down; QX"
	if n := testing.AllocsPerRun(100, func() { clear(h); m.scan(line, h) }); n != 0 {
		t.Errorf("scan made %v allocations", n)
	}
}

// TestEveryRuleShapeTakesTheOnePass: rules with no literal at all, with
// case-insensitive patterns, [Xx] classes, NPD's "(?:...)$" wrapping and a
// contains of their own all match through the one pass, and only where
// their patterns do.
func TestEveryRuleShapeTakesTheOnePass(t *testing.T) {
	rules := []Rule{
		{Name: "regex-only", Kind: finding.KindEvent, Reason: "Digits", Pattern: `^[0-9]+$`},
		{Name: "fold", Kind: finding.KindEvent, Reason: "Firmware", Pattern: `(?i)firmware fault 0x[0-9a-f]+`},
		{Name: "class", Kind: finding.KindEvent, Reason: "LinkDown", Pattern: `[Ll]ink [Dd]own`},
		{Name: "npd", Kind: finding.KindEvent, Reason: "TaskHung", Pattern: `(?:task [\S ]+:\w+ blocked for more than \w+ seconds\.)$`},
		{Name: "user", Kind: finding.KindEvent, Reason: "Acme", Contains: "acme_nic", Pattern: `acme_nic \S+: reset`},
	}
	tests := []struct {
		line string
		want []string
	}{
		{"12345", []string{"Digits"}},
		{"12345 x", nil},
		{"acme_nic 0000:3b:00.0: FIRMWARE FAULT 0x17, resetting", []string{"Firmware"}},
		{"acme_nic 0000:3b:00.0: Firmware Fault", nil},
		{"mlx5_core 0000:5e:00.0 ens1f0: Link down", []string{"LinkDown"}},
		{"eth0: LINK DOWN", nil},
		{"INFO: task java app:3311 blocked for more than 120 seconds.", []string{"TaskHung"}},
		{"INFO: task java:3311 blocked for more than 120 seconds. again", nil},
		{"acme_nic 0000:3b:00.0: reset", []string{"Acme"}},
		{"acme 0000:3b:00.0: reset", nil},
	}
	set, err := Compile(rules, nil)
	if err != nil {
		t.Fatal(err)
	}
	// What each prefilters by: nothing for the first, a folded literal for
	// the second and third.
	if p := set.rules[0].pre; p != nil {
		t.Errorf("regex-only rule has prefilter %v", p)
	}
	for _, i := range []int{1, 2} {
		if p := set.rules[i].pre; len(p) == 0 || !set.scan.m.lits[p[0][0]].fold {
			t.Errorf("rule %s: prefilter %v, want a folded literal", rules[i].Name, p)
		}
	}
	for _, tt := range tests {
		e := set.Engine()
		var got []string
		for _, f := range e.Flush(e.Feed(Line{Text: tt.line}, nil)) {
			got = append(got, f.Reason)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%q made %v, want %v", tt.line, got, tt.want)
		}
	}
}
