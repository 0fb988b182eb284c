//go:build !race

package kernelrules

const raceEnabled = false
