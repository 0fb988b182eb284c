package logrules

import (
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"unicode/utf8"
)

// RequiredLiteral returns the longest literal that every match of pattern
// must contain, in the pattern's own case, or "" when there is none to find
// (an alternation at the top, or case-insensitive text). A rule without its
// own `contains` uses it as its prefilter.
func RequiredLiteral(pattern string) string {
	set := requiredLiterals(pattern)
	if len(set) != 1 || set[0].fold {
		return ""
	}
	return set[0].text
}

// maxAlternatives bounds the literals of one set: a pattern that only a
// longer list describes runs on every line rather than cost a long list
// per line.
const maxAlternatives = 16

// maxGroups is how many of a pattern's required sets a prefilter keeps.
const maxGroups = 3

// requiredLiterals returns literals of which every match of pattern holds
// at least one, or nil when it finds none: the best of requiredGroups.
func requiredLiterals(pattern string) []literal {
	if g := requiredGroups(pattern); len(g) > 0 {
		return g[0]
	}
	return nil
}

// requiredGroups returns, best first, up to maxGroups sets of literals
// that every match of pattern holds one of each; none when it finds none,
// and the pattern then runs on every line. It looks through captures,
// repeats, alternations (a literal from each branch), case-insensitive
// text and [Xx] classes (literals that fold ASCII case), and takes sets from
// each part of a concatenation: "XFS \(.*: (?:Corruption|.*shut down)" is
// both "XFS (" and one of "Corruption" and "shut down".
func requiredGroups(pattern string) [][]literal {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil
	}
	g := required(re.Simplify())
	slices.SortStableFunc(g, func(a, b []literal) int {
		switch {
		case better(a, b):
			return -1
		case better(b, a):
			return 1
		}
		return 0
	})
	// Past the best set, a short literal ("): ") is in most lines and
	// would only cost its comparisons.
	keep := g[:min(len(g), 1)]
	for _, set := range g[len(keep):] {
		if len(keep) < maxGroups && shortest(set) >= minExtraLiteral {
			keep = append(keep, set)
		}
	}
	return keep
}

// minExtraLiteral is the shortest literal a set past the best may hold.
const minExtraLiteral = 4

// required returns the sets of literals that every match of re holds one
// of each, in no order.
func required(re *syntax.Regexp) [][]literal {
	one := func(set []literal) [][]literal {
		if set == nil {
			return nil
		}
		return [][]literal{set}
	}
	switch re.Op {
	case syntax.OpLiteral, syntax.OpCharClass:
		return one(runLiterals(litRunes(re)))
	case syntax.OpCapture, syntax.OpPlus:
		// x+ holds x at least once.
		return required(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return required(re.Sub[0])
		}
	case syntax.OpAlternate:
		// One set: each branch's best.
		var set []literal
		for _, sub := range re.Sub {
			var best []literal
			for _, s := range required(sub) {
				if better(s, best) {
					best = s
				}
			}
			if best == nil || len(set)+len(best) > maxAlternatives {
				return nil
			}
			set = append(set, best...)
		}
		return one(set)
	case syntax.OpConcat:
		var groups [][]literal
		var run []litRune
		for _, sub := range re.Sub {
			if zeroWidth(sub.Op) {
				// Assertions consume nothing: the runs on either side are
				// adjacent in the line.
				continue
			}
			if r := litRunes(sub); r != nil {
				run = append(run, r...)
				continue
			}
			if set := endings(run, sub); set != nil {
				groups = append(groups, set)
				run = nil
				continue
			}
			if len(run) > 0 {
				groups = append(groups, one(runLiterals(run))...)
			}
			run = nil
			groups = append(groups, required(sub)...)
		}
		if len(run) > 0 {
			groups = append(groups, one(runLiterals(run))...)
		}
		return groups
	}
	return nil
}

// maxEndings is the most characters of a class that endings spells out.
const maxEndings = 4

// endings returns the run's literal with each character of a small class
// after it, "fault:" and "fault," for "fault[:,]": a set of longer
// literals, which fewer lines hold than the run alone. Nil when the class
// is larger, or the run's literal would not end where the class begins.
func endings(run []litRune, class *syntax.Regexp) []literal {
	if len(run) == 0 || class.Op != syntax.OpCharClass || slices.ContainsFunc(run, unsafeFold) {
		return nil
	}
	var chars []rune
	for i := 0; i+1 < len(class.Rune); i += 2 {
		for c := class.Rune[i]; c <= class.Rune[i+1]; c++ {
			if c >= utf8.RuneSelf || len(chars) == maxEndings {
				return nil
			}
			chars = append(chars, c)
		}
	}
	var set []literal
	for _, c := range chars {
		set = append(set, runLiterals(append(slices.Clone(run), litRune{r: c}))...)
	}
	return set
}

func zeroWidth(op syntax.Op) bool {
	switch op {
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return true
	}
	return false
}

// better reports whether set a prefilters better than set b: its shortest
// literal is longer (fewer lines hold it), or as long and it has fewer
// literals or folds none.
func better(a, b []literal) bool {
	if a == nil {
		return false
	}
	if b == nil {
		return true
	}
	sa, sb := shortest(a), shortest(b)
	if sa != sb {
		return sa > sb
	}
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return folds(a) < folds(b)
}

func shortest(set []literal) int {
	n := -1
	for _, l := range set {
		if n < 0 || len(l.text) < n {
			n = len(l.text)
		}
	}
	return n
}

func folds(set []literal) int {
	n := 0
	for _, l := range set {
		if l.fold {
			n++
		}
	}
	return n
}

// litRune is one character a match holds at its place: exactly, or in
// either ASCII case.
type litRune struct {
	r    rune
	fold bool
	// unicode says the pattern folds it as Go's (?i) does, not as a
	// [Xx] class does.
	unicode bool
}

// litRunes returns the characters of a literal, or the one character of a
// class that is a letter in both cases ([Ll]); nil for anything else.
func litRunes(re *syntax.Regexp) []litRune {
	switch re.Op {
	case syntax.OpLiteral:
		out := make([]litRune, len(re.Rune))
		for i, r := range re.Rune {
			fold := re.Flags&syntax.FoldCase != 0 && hasCase(r)
			out[i] = litRune{r: r, fold: fold, unicode: fold}
		}
		return out
	case syntax.OpCharClass:
		// A class is pairs of rune ranges: [Ll] is [L-L l-l].
		c := re.Rune
		if len(c) == 4 && c[0] == c[1] && c[2] == c[3] && 'A' <= c[0] && c[0] <= 'Z' && c[2] == c[0]+'a'-'A' {
			return []litRune{{r: c[2], fold: true}}
		}
	}
	return nil
}

func hasCase(r rune) bool {
	return ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || r >= utf8.RuneSelf
}

// unsafeFold reports whether a case-insensitive character may match bytes
// that its ASCII cases are not: k matches the Kelvin sign and s the long s
// under Go's case folding, and letters beyond ASCII have cases of other
// lengths.
func unsafeFold(c litRune) bool {
	if !c.unicode {
		return false
	}
	switch c.r {
	case 'k', 'K', 's', 'S':
		return true
	}
	return c.r >= utf8.RuneSelf
}

// runLiterals returns the best literal of a run of characters: its longest
// stretch without a character the matcher cannot fold, folding ASCII case
// if any character of it does.
func runLiterals(run []litRune) []literal {
	var best []literal
	start := 0
	for i := 0; i <= len(run); i++ {
		if i < len(run) && !unsafeFold(run[i]) {
			continue
		}
		if i > start {
			l := literal{}
			b := make([]byte, 0, i-start)
			for _, c := range run[start:i] {
				b = utf8.AppendRune(b, c.r)
				l.fold = l.fold || c.fold
			}
			if l.fold {
				// One spelling per folded literal, so that equal ones
				// are one to the matcher.
				for j := range b {
					if 'A' <= b[j] && b[j] <= 'Z' {
						b[j] += 'a' - 'A'
					}
				}
			}
			l.text = string(b)
			if s := []literal{l}; better(s, best) {
				best = s
			}
		}
		start = i + 1
	}
	return best
}

// branch is one branch of a rule's top-level alternation, compiled alone,
// and what a line must hold before it runs.
type branch struct {
	re      *regexp.Regexp
	derived [][]literal
	pre     prefilter
}

// maxBranches bounds the alternations split into branches.
const maxBranches = 8

// splitBranches returns the branches of a pattern that is an alternation
// at its top (through groups), each compiled alone with the literals it
// requires, or nil for any other pattern. A line matches the pattern when
// it matches one of them. Go's regexp finds a match fast only from a
// literal the pattern begins with, and an alternation of different
// beginnings has none: it tries every offset of the line
// ("(?:\\bI/O error, dev \\S+|Buffer I/O error on dev \\S+|...)" cost 0.8 us a
// line holding "I/O error"). Alone, each branch begins with its literal,
// and runs only on lines holding what it requires, not what any branch
// does.
//
// The branches are cut from the pattern's text: printing them from the
// parsed pattern (syntax.Regexp.String) took 7 ms for io-error's three,
// five times what compiling every kernel rule takes.
func splitBranches(pattern string) []branch {
	texts := topBranches(pattern)
	if len(texts) < 2 || len(texts) > maxBranches {
		return nil
	}
	var out []branch
	for _, text := range texts {
		b, err := regexp.Compile(text)
		if err != nil {
			return nil
		}
		out = append(out, branch{re: b, derived: requiredGroups(text)})
	}
	return out
}

// topBranches cuts a pattern at the bars of its top level, inside groups
// that hold the whole of it: "(?:a|b)" is "a" and "b". A leading flag
// group ("(?i)") goes before each branch; nil where another one at the
// top level has a bar after it, since its flags reach into the branches
// after it, and for a pattern that does not parse as this reads it.
func topBranches(p string) []string {
	flags := ""
	if strings.HasPrefix(p, "(?") {
		if end := strings.IndexByte(p, ')'); end > 0 && isFlags(p[2:end]) {
			flags, p = p[:end+1], p[end+1:]
		}
	}
	for {
		if len(p) < 2 || p[0] != '(' || closing(p, 0) != len(p)-1 {
			break
		}
		inner := p[1 : len(p)-1]
		switch {
		case strings.HasPrefix(inner, "?:"):
			inner = inner[2:]
		case strings.HasPrefix(inner, "?"):
			// A named or flagged group: left whole.
			return nil
		}
		p = inner
	}
	var out []string
	depth, start, flagged := 0, 0, false
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '\\':
			i++
		case '[':
			end := classEnd(p, i)
			if end < 0 {
				return nil
			}
			i = end
		case '(':
			if depth == 0 && strings.HasPrefix(p[i:], "(?") {
				if end := strings.IndexByte(p[i:], ')'); end > 0 && isFlags(p[i+2:i+end]) {
					flagged = true
				}
			}
			depth++
		case ')':
			depth--
		case '|':
			if depth == 0 && flagged {
				return nil
			}
			if depth == 0 {
				out = append(out, flags+p[start:i])
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return nil
	}
	return append(out, flags+p[start:])
}

// isFlags reports whether s is the inside of a flag group, "i" of "(?i)".
func isFlags(s string) bool {
	return s != "" && strings.Trim(s, "imsU-") == ""
}

// closing returns the offset of the parenthesis that closes the one at
// open, or -1.
func closing(p string, open int) int {
	depth := 0
	for i := open; i < len(p); i++ {
		switch p[i] {
		case '\\':
			i++
		case '[':
			if i = classEnd(p, i); i < 0 {
				return -1
			}
		case '(':
			depth++
		case ')':
			if depth--; depth == 0 {
				return i
			}
		}
	}
	return -1
}

// classEnd returns the offset of the "]" that ends the class opening at
// open, or -1: "]" first in it, or after "^", is a member, as are escaped
// ones and those of "[:alpha:]".
func classEnd(p string, open int) int {
	i := open + 1
	if i < len(p) && p[i] == '^' {
		i++
	}
	if i < len(p) && p[i] == ']' {
		i++
	}
	for ; i < len(p); i++ {
		switch {
		case p[i] == '\\':
			i++
		case strings.HasPrefix(p[i:], "[:"):
			if end := strings.Index(p[i+2:], ":]"); end >= 0 {
				i += end + 3
			}
		case p[i] == ']':
			return i
		}
	}
	return -1
}
