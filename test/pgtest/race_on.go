//go:build race

package pgtest

const raceEnabled = true
