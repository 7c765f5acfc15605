//go:build race

package election

// simRace is set when the race detector is on: it makes a schedule about
// five times slower, so the tests run fewer (see simCount).
const simRace = true
