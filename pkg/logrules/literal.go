package logrules

import "regexp/syntax"

// RequiredLiteral returns the longest literal that every match of pattern
// must contain, or "" when there is none to find (an alternation at the top,
// or case-insensitive text). A rule without its own `contains` uses it as
// its prefilter.
func RequiredLiteral(pattern string) string {
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return ""
	}
	return longestRequired(re.Simplify())
}

func longestRequired(re *syntax.Regexp) string {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase != 0 {
			return ""
		}
		return string(re.Rune)
	case syntax.OpCapture:
		return longestRequired(re.Sub[0])
	case syntax.OpPlus:
		// x+ holds x at least once.
		return longestRequired(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return longestRequired(re.Sub[0])
		}
	case syntax.OpConcat:
		best, run := "", ""
		for _, sub := range re.Sub {
			if sub.Op == syntax.OpLiteral && sub.Flags&syntax.FoldCase == 0 {
				run += string(sub.Rune)
				continue
			}
			if len(run) > len(best) {
				best = run
			}
			run = ""
			if s := longestRequired(sub); len(s) > len(best) {
				best = s
			}
		}
		if len(run) > len(best) {
			best = run
		}
		return best
	}
	return ""
}
