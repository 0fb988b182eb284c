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
// commit that brought this for the figures.
//
// A literal that ignores case is anchored at every case of its pair. A
// one-byte literal has no pair; the few there are are searched apiece.
type matcher struct {
	anchors [1 << 16 / 64]uint64
	// slots is an open-addressed table from an anchor pair to its entry
	// in lists, the literals anchored there and where.
	slots []anchorSlot
	lists [][]anchored
	short []int32
	lits  []literal
}

type anchorSlot struct {
	pair uint16
	used bool
	list int32
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
	m := &matcher{lits: lits}
	lists := map[uint16]int32{}
	for i, l := range lits {
		if len(l.text) < 2 {
			m.short = append(m.short, int32(i))
			continue
		}
		off := 0
		for k := 1; k+1 < len(l.text); k++ {
			if pairCommon(l.text[k], l.text[k+1], l.fold) < pairCommon(l.text[off], l.text[off+1], l.fold) {
				off = k
			}
		}
		for _, a := range cases(l.text[off], l.fold) {
			for _, b := range cases(l.text[off+1], l.fold) {
				pair := uint16(a) | uint16(b)<<8
				m.anchors[pair>>6] |= 1 << (pair & 63)
				j, ok := lists[pair]
				if !ok {
					j = int32(len(m.lists))
					lists[pair] = j
					m.lists = append(m.lists, nil)
				}
				m.lists[j] = append(m.lists[j], anchored{lit: int32(i), off: int32(off)})
			}
		}
	}
	size := 2
	for size < 2*len(lists) {
		size *= 2
	}
	m.slots = make([]anchorSlot, size)
	for pair, j := range lists {
		k := slotOf(pair, size)
		for m.slots[k].used {
			k = (k + 1) & (size - 1)
		}
		m.slots[k] = anchorSlot{pair: pair, used: true, list: j}
	}
	return m
}

func slotOf(pair uint16, size int) int { return int(uint32(pair)*0x9E3779B1>>16) & (size - 1) }

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
		c := m.lits[l].text[0]
		if strings.IndexByte(s, c) >= 0 || (m.lits[l].fold && otherCase(c) != c && strings.IndexByte(s, otherCase(c)) >= 0) {
			h.set(l)
		}
	}
}

// verify compares with s the literals anchored at the pair at i.
func (m *matcher) verify(s string, i int, pair uint16, h hits) {
	size := len(m.slots)
	k := slotOf(pair, size)
	for m.slots[k].pair != pair {
		k = (k + 1) & (size - 1)
	}
	for _, a := range m.lists[m.slots[k].list] {
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
