package logrules

import "strings"

// matcher finds, in one pass over a line, which of a rule set's literals the
// line holds, whatever their number, so that a benign line costs about the
// same with forty rules as with one, and allocates nothing.
//
// Each literal is anchored at its rarest pair of adjacent bytes (rarest by
// a fixed ranking of how common bytes are in log text: capitals and
// punctuation are rarer than lower case and spaces). The scan reads the
// line's byte pairs, each looked up in a 65,536-bit table of anchors; only
// at an anchor are the literals anchored there compared with the line. The
// lookups do not depend on one another, as an automaton's transitions do,
// so the processor runs several at once: an Aho-Corasick table automaton
// (one dependent load per byte) was two to three times slower here, and the
// kept Go modules measured allocated per line or were slower still; see the
// commit that brought this for the figures. (Reading only every other
// pair, each literal anchored at two adjacent pairs, measured no faster:
// the second pair of a short literal is a common one, and the anchors
// found in a line nearly doubled.)
//
// A literal that ignores case is anchored at every case of its pair. A
// one-byte literal has no pair; the few there are are searched apiece.
type matcher struct {
	anchors [1 << 16 / 64]uint64
	// list is, per anchor pair, its index in lists, the literals
	// anchored there and where (meaningful only where anchors has the
	// pair, so 65,536 pairs fit a uint16): one load where a hash table
	// took a probe loop, and the pages of it that no anchor uses are
	// never touched.
	list  []uint16
	lists [][]anchored
	short []shortLiteral
	lits  []literal
}
type anchored struct {
	lit int32
	off int32
}

// literal is text a line must hold; fold says that ASCII letters match
// either case.
type literal struct {
	text string
	fold bool
}

// literals collects the distinct literals of a rule set and gives each an
// index, for the matcher and the prefilters that name them.
type literals struct {
	list  []literal
	index map[literal]int32
}

func (ls *literals) add(l literal) int32 {
	if ls.index == nil {
		ls.index = map[literal]int32{}
	}
	if i, ok := ls.index[l]; ok {
		return i
	}
	ls.list = append(ls.list, l)
	ls.index[l] = int32(len(ls.list) - 1)
	return ls.index[l]
}

// hits is the set of literals a line holds, one bit each.
type hits []uint64

func (h hits) has(i int32) bool { return h[i>>6]&(1<<(uint(i)&63)) != 0 }

func (h hits) set(i int32) { h[i>>6] |= 1 << (uint(i) & 63) }

// commonness ranks bytes from the most common in kernel and service logs
// (prose, numbers, "key: value", paths); a byte not listed is rarer than
// all that are. Each place down the list counts as 0.8 times as common.
const commonness = " e:t0a1o2i3n4s5r6d7l8c9hu.m-p,f=g/_ybv()[]wkx\"'TSEACIRNOPDMLBFGUHKWVYXJQZjqz#;<>+*%@!?&|$~^`{}"

// frequency is, per byte, a weight falling by a fifth per place in
// commonness.
var frequency = func() (f [256]float64) {
	w := 1.0
	for i := 0; i < len(commonness); i++ {
		f[commonness[i]] = w
		w *= 0.8
	}
	for b := range f {
		if f[b] == 0 {
			f[b] = w
		}
	}
	return f
}()

// pairCommon is how common a pair of bytes is: a literal that ignores
// case counts a letter's both cases.
func pairCommon(a, b byte, fold bool) float64 {
	weight := func(c byte) float64 {
		w := frequency[c]
		if d := otherCase(c); fold && d != c {
			w += frequency[d]
		}
		return w
	}
	return weight(a) * weight(b)
}

func otherCase(b byte) byte {
	switch {
	case 'a' <= b && b <= 'z':
		return b - 'a' + 'A'
	case 'A' <= b && b <= 'Z':
		return b - 'A' + 'a'
	}
	return b
}

// cases returns b, and its other case where fold says it has one.
func cases(b byte, fold bool) []byte {
	if o := otherCase(b); fold && o != b {
		return []byte{b, o}
	}
	return []byte{b}
}

// newMatcher compiles the literals; none may be empty.
func newMatcher(lits []literal) *matcher {
	m := &matcher{lits: lits, list: make([]uint16, 1<<16)}
	anchor := func(lit int32, off int, a, b byte) {
		pair := uint16(a) | uint16(b)<<8
		if m.anchors[pair>>6]&(1<<(pair&63)) == 0 {
			m.anchors[pair>>6] |= 1 << (pair & 63)
			m.list[pair] = uint16(len(m.lists))
			m.lists = append(m.lists, nil)
		}
		j := m.list[pair]
		m.lists[j] = append(m.lists[j], anchored{lit: lit, off: int32(off)})
	}
	for i, l := range lits {
		if len(l.text) < 2 {
			m.short = append(m.short, newShortLiteral(int32(i), l))
			continue
		}
		t := l.text
		off := 0
		for k := 1; k+1 < len(t); k++ {
			if pairCommon(t[k], t[k+1], l.fold) < pairCommon(t[off], t[off+1], l.fold) {
				off = k
			}
		}
		for _, a := range cases(t[off], l.fold) {
			for _, b := range cases(t[off+1], l.fold) {
				anchor(int32(i), off, a, b)
			}
		}
	}
	return m
}

// scan sets in h each literal that s holds; h must be clear and have a bit
// for every literal.
func (m *matcher) scan(s string, h hits) {
	anchors := &m.anchors
	for i := 0; i+1 < len(s); i++ {
		pair := uint16(s[i]) | uint16(s[i+1])<<8
		if anchors[pair>>6]&(1<<(pair&63)) != 0 {
			m.verify(s, i, pair, h)
		}
	}
	for _, l := range m.short {
		if l.holds(s) {
			h.set(l.lit)
		}
	}
}

// shortLiteral is a one-byte literal, which has no pair to anchor it: it
// is searched for in each of its cases.
type shortLiteral struct {
	lit   int32
	cases []string
}

func newShortLiteral(i int32, l literal) shortLiteral {
	var out []string
	for _, c := range cases(l.text[0], l.fold) {
		out = append(out, string([]byte{c}))
	}
	return shortLiteral{lit: i, cases: out}
}

func (l *shortLiteral) holds(s string) bool {
	for _, c := range l.cases {
		if strings.Contains(s, c) {
			return true
		}
	}
	return false
}

// verify compares with s the literals anchored at the pair at i.
func (m *matcher) verify(s string, i int, pair uint16, h hits) {
	for _, a := range m.lists[m.list[pair]] {
		l := &m.lits[a.lit]
		start := i - int(a.off)
		if start < 0 || start+len(l.text) > len(s) {
			continue
		}
		part := s[start : start+len(l.text)]
		if part == l.text || (l.fold && asciiEqualFold(part, l.text)) {
			h.set(a.lit)
		}
	}
}

// asciiEqualFold is strings.EqualFold for ASCII case only, the folding the
// literals' extraction allows for.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if a[i] != b[i] && !(otherCase(a[i]) == b[i]) {
			return false
		}
	}
	return true
}

// prefilter is what a line must hold before a pattern runs on it: for each
// group, one of its literals. A nil prefilter passes every line.
type prefilter [][]int32

func (p prefilter) pass(h hits) bool {
	for _, group := range p {
		ok := false
		for _, l := range group {
			if h.has(l) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
