//go:build race

package dkimsign

// raceEnabled: the race detector multiplies memory and time, so the memory
// test means nothing under it.
const raceEnabled = true
