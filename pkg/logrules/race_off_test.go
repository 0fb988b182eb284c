//go:build !race

package logrules

const raceEnabled = false
