package elector

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vapor-ware/k8s-elector/internal/controlplane"
)

// participant is one elector process.
type participant struct {
	*controlplane.Process
	id      string
	addr    string
	started time.Time

	mu   sync.Mutex
	logs bytes.Buffer
	// ended is when the test sent a signal that ends the process; while it
	// is zero, the process must run and answer.
	ended time.Time
	// released is when the test sent SIGTERM or SIGINT: a leader then hands
	// over without the gap.
	released time.Time
	// releasedLock are when the process logged that it released the lock
	// while it ran on (its application turned unhealthy), as read.
	releasedLock []time.Time
	freezes      []freeze
}

// freeze is a SIGSTOP (stopped is once the process is seen stopped) and the
// SIGCONT that ended it (resumed is just before it was sent).
type freeze struct{ stopped, resumed time.Time }

func (p *participant) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// frozen reports whether the process is stopped now.
func (p *participant) frozen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.freezes) > 0 && p.freezes[len(p.freezes)-1].resumed.IsZero()
}

// mayEnd reports whether the test had asked the process to end by at.
func (p *participant) mayEnd(at time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.ended.IsZero() && !p.ended.After(at)
}

// answeredFrom is the earliest instant an answer to a request sent at sent
// and received at got can describe: a request sent while the process was
// stopped is answered after it resumed.
func (p *participant) answeredFrom(sent, got time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, f := range p.freezes {
		if !sent.Before(f.stopped) && !f.resumed.IsZero() && sent.Before(f.resumed) && f.resumed.Before(got) {
			return f.resumed
		}
	}
	return sent
}

var (
	joiningText = regexp.MustCompile(`msg="joining election".* ttl=(\S+) renewDeadline=(\S+)`)
	joiningJSON = regexp.MustCompile(`"msg":"joining election".*"ttl":(\d+),"renewDeadline":(\d+)`)
)

// promisedGap is ttl - renew deadline as the participant logged them when
// it joined: the gap it promises after its last is_leader=true, whatever
// defaults its binary has.
func (p *participant) promisedGap() (time.Duration, bool) {
	logs := p.Logs()
	if m := joiningText.FindStringSubmatch(logs); m != nil {
		ttl, err1 := time.ParseDuration(m[1])
		renew, err2 := time.ParseDuration(m[2])
		return ttl - renew, err1 == nil && err2 == nil
	}
	if m := joiningJSON.FindStringSubmatch(logs); m != nil {
		ttl, err1 := strconv.ParseInt(m[1], 10, 64)
		renew, err2 := strconv.ParseInt(m[2], 10, 64)
		return time.Duration(ttl - renew), err1 == nil && err2 == nil
	}
	return 0, false
}

// signal sends sig. SIGTERM, SIGINT and SIGKILL tell the watcher the process
// may go away from now on; SIGTERM and SIGINT also that it hands over.
func (p *participant) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.mu.Lock()
	now := time.Now()
	switch sig {
	case syscall.SIGTERM, syscall.SIGINT:
		if p.ended.IsZero() {
			p.ended, p.released = now, now
		}
	case syscall.SIGKILL:
		if p.ended.IsZero() {
			p.ended = now
		}
	}
	p.mu.Unlock()
	if err := p.Signal(sig); err != nil {
		t.Fatalf("signal %s to %s: %v", sig, p.id, err)
	}
}

// stop sends sig and waits for the process to exit. It returns when the
// signal was sent and the exit status.
func (p *participant) stop(t *testing.T, sig syscall.Signal) (time.Time, error) {
	t.Helper()
	sent := time.Now()
	p.signal(t, sig)
	select {
	case <-p.Done():
	case <-time.After(10*time.Second + loadSlack):
		t.Fatalf("%s did not exit within %s of %s", p.id, 10*time.Second+loadSlack, sig)
	}
	return sent, p.Err()
}

// freeze stops the process (SIGSTOP) and returns once it is stopped, with
// when it was seen stopped.
func (p *participant) freeze(t *testing.T) time.Time {
	t.Helper()
	if err := p.Freeze(5 * time.Second); err != nil {
		t.Fatalf("%s: %v", p.id, err)
	}
	now := time.Now()
	p.mu.Lock()
	p.freezes = append(p.freezes, freeze{stopped: now})
	p.mu.Unlock()
	return now
}

// thaw resumes a frozen process (SIGCONT) and returns when SIGCONT was
// sent.
func (p *participant) thaw(t *testing.T) time.Time {
	t.Helper()
	p.mu.Lock()
	now := time.Now()
	p.freezes[len(p.freezes)-1].resumed = now
	p.mu.Unlock()
	if err := p.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	return now
}

var httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}

// get asks the participant method path and returns the status code and
// body.
func (p *participant) get(path string) (int, string, error) {
	resp, err := httpClient.Get("http://" + p.addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// metric reads one sample of /metrics, by its name with labels, as text.
func (p *participant) metric(t *testing.T, name string) string {
	t.Helper()
	code, body, err := p.get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics on %s = %d, %v", p.id, code, err)
	}
	for line := range strings.Lines(body) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			return v
		}
	}
	return ""
}
