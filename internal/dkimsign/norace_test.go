//go:build !race

package dkimsign

const raceEnabled = false
