package election

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Health-gated leadership.
//
// With Config.AppHealthURL set, the elector probes its application, and
// leadership follows the application's health:
//   - a participant whose application is not healthy never takes the lock
//     (nor names itself the successor): not before its first healthy
//     answer, nor after AppHealthThreshold failures in a row until it
//     answers healthy again;
//   - a leader whose application turns unhealthy releases the lock, as on
//     shutdown, so a healthy follower takes over at once rather than a TTL
//     later.
//
// A probe is a GET that must answer 2xx or 3xx within the period; an
// application that cannot be reached at all is unhealthy.

// Defaults of the application health check.
const (
	DefaultAppHealthPeriod    = time.Second
	DefaultAppHealthThreshold = 3
	// MinAppHealthPeriod keeps the probes from loading the application.
	MinAppHealthPeriod = 100 * time.Millisecond
)

// ValidateAppHealthURL checks the URL of an application health check.
func ValidateAppHealthURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL: %v (example: http://localhost:8080/healthz)", s, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q is not an http or https URL (example: http://localhost:8080/healthz)", s)
	case u.Host == "":
		return fmt.Errorf("%q names no host (example: http://localhost:8080/healthz)", s)
	}
	return nil
}

// appHealth probes the application every period and keeps its verdict.
type appHealth struct {
	url       string
	period    time.Duration
	threshold int
	client    *http.Client
	// changed is called when the verdict changes.
	changed func(healthy bool, why string)

	mu       sync.Mutex
	healthy  bool
	failures int
}

func newAppHealth(cfg Config, changed func(bool, string)) *appHealth {
	return &appHealth{
		url:       cfg.AppHealthURL,
		period:    cfg.AppHealthPeriod,
		threshold: cfg.AppHealthThreshold,
		// No keep-alive across probes would cost a connection per probe;
		// one idle connection to the application is kept.
		client:  &http.Client{Timeout: cfg.AppHealthPeriod, Transport: &http.Transport{MaxIdleConns: 1, DisableCompression: true}},
		changed: changed,
	}
}

// ok reports the verdict: healthy since the last healthy answer, until
// threshold failures in a row.
func (h *appHealth) ok() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.healthy
}

// run probes every period until ctx is done.
func (h *appHealth) run(ctx context.Context) {
	t := time.NewTicker(h.period)
	defer t.Stop()
	for {
		err := h.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		h.record(err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe asks the application once; nil means healthy.
func (h *appHealth) probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "k8s-elector")
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// record takes one probe's outcome into the verdict.
func (h *appHealth) record(err error) {
	h.mu.Lock()
	was := h.healthy
	if err == nil {
		h.healthy, h.failures = true, 0
	} else {
		h.failures++
		if h.failures >= h.threshold {
			h.healthy = false
		}
	}
	now := h.healthy
	h.mu.Unlock()
	if now != was {
		why := "answered healthy"
		if err != nil {
			why = fmt.Sprintf("%d failed probes in a row, the last: %v", h.threshold, err)
		}
		h.changed(now, why)
	}
}
