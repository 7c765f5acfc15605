//go:build race

package elector

// raceEnabled: the tests run with -race, so the elector binaries they start
// are built with it too, and a data race in the elector fails its process.
const raceEnabled = true
