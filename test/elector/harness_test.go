package elector

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// timing is an election's lease settings.
type timing struct {
	ttl, renew, retry time.Duration
}

// args are the elector's flags for tm.
func (tm timing) args() []string {
	return []string{
		"-ttl=" + tm.ttl.String(),
		"-renew-deadline=" + tm.renew.String(),
		"-retry-period=" + tm.retry.String(),
	}
}

// gap is what the elector promises between an old leader's last
// is_leader=true and a new leader's first, unless the old one released the
// lock: the others wait a ttl from when they saw its last renewal, and it
// stops saying true a renew deadline after it sent that renewal.
func (tm timing) gap() time.Duration { return tm.ttl - tm.renew }

// std is the timing most tests use: a short ttl keeps them quick, and the
// renew deadline and retry period are valid both under the rules the elector
// had and under the rules it has now (renew deadline > 1.2 x max(retry
// period, 1s)).
var std = timing{ttl: 4 * time.Second, renew: 1500 * time.Millisecond, retry: 500 * time.Millisecond}

// loadSlack is added to upper bounds on how long something may take, for a
// loaded 2-core machine running the electors under the race detector. Lower
// bounds get no slack: they follow from the elector's promises.
const loadSlack = 5 * time.Second

// settle is how long a test waits for what must happen (an election, a
// handover) before it fails. It is no bound on speed: where speed is the
// property, the test checks it from the watcher's answers.
const settle = 30 * time.Second

// apiTimeout bounds the tests' own requests to the API server.
const apiTimeout = 30 * time.Second

// pollPeriod is how often the watcher asks each participant GET /, at most.
const pollPeriod = 2 * time.Millisecond

func tempFile(t *testing.T, name string, data []byte) string {
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// eventually calls f until it returns nil, and fails the test with its last
// error after timeout.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
