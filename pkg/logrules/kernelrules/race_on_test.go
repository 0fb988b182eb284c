//go:build race

package kernelrules

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// the regexp package's pooled matchers are allocated anew now and then and
// allocation counts mean nothing.
const raceEnabled = true
