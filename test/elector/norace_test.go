//go:build !race

package elector

// raceEnabled: the tests run without -race, and so do the electors.
const raceEnabled = false
