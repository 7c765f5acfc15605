package election

import (
	"context"
	"crypto/tls"
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
// A probe is a GET that must answer 2xx or 3xx within the period (a
// redirect is not followed; https certificates are not checked, as the
// kubelet's probes do not); an application that cannot be reached at all is
// unhealthy.

// Defaults of the application health check.
const (
	DefaultAppHealthPeriod    = time.Second
	DefaultAppHealthThreshold = 3
	// MinAppHealthPeriod keeps the probes from loading the application.
	MinAppHealthPeriod = 100 * time.Millisecond
)

// ValidateAppHealthURL checks the URL of an application health check.
func ValidateAppHealthURL(s string) error {
	return validateHTTPURL(s, "http://localhost:8080/healthz")
}

// validateHTTPURL checks an http or https URL of the application; example
// is a good one, for the error.
func validateHTTPURL(s, example string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL: %v (example: %s)", s, err, example)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q is not an http or https URL (example: %s)", s, example)
	case u.Host == "":
		return fmt.Errorf("%q names no host (example: %s)", s, example)
	}
	return nil
}

// appHealth probes the application every period and keeps its verdict.
type appHealth struct {
	url       string
	period    time.Duration
	threshold int
	client    *http.Client
	// changed is called when the verdict changes; stillUnhealthy, now and
	// then while it stays unhealthy.
	changed        func(healthy bool, why string)
	stillUnhealthy func(err error)

	mu       sync.Mutex
	healthy  bool
	failures int
	// logged is when a failure while unhealthy was last told.
	logged time.Time
}

// stillUnhealthyEvery is how often the failures of an application that
// stays unhealthy are told again, so a wrong URL shows in the log.
const stillUnhealthyEvery = time.Minute

func newAppHealth(cfg Config, changed func(bool, string), stillUnhealthy func(error)) *appHealth {
	return &appHealth{
		stillUnhealthy: stillUnhealthy,
		url:            cfg.AppHealthURL,
		period:         cfg.AppHealthPeriod,
		threshold:      cfg.AppHealthThreshold,
		// No keep-alive across probes would cost a connection per probe;
		// one idle connection to the application is kept.
		client: &http.Client{
			Timeout: cfg.AppHealthPeriod,
			Transport: &http.Transport{
				MaxIdleConns: 1, IdleConnTimeout: 2 * cfg.AppHealthPeriod, DisableCompression: true,
				// The kubelet's https probes do not check certificates
				// either: an application's own is often self-signed.
				TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
			},
			// A 3xx is the answer: following it would judge another page,
			// maybe on another host.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
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
	defer h.client.CloseIdleConnections()
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
	resp, err := askApp(h.client, req)
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// askApp sends req to the application, as the health check and the
// notifier do, and returns the answer with its body read (up to 64 KiB)
// and closed: the status is what counts, and a drained body frees the
// connection.
func askApp(client *http.Client, req *http.Request) (*http.Response, error) {
	req.Header.Set("User-Agent", "k8s-elector")
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp, nil
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
	// Unhealthy from the start (a wrong URL, say), or still unhealthy: say
	// why now and then, not only on a change.
	remind := err != nil && !now && now == was && time.Since(h.logged) >= stillUnhealthyEvery
	if now != was || remind {
		h.logged = time.Now()
	}
	h.mu.Unlock()
	switch {
	case now != was:
		why := "answered healthy"
		if err != nil {
			why = fmt.Sprintf("%d failed probes in a row, the last: %v", h.threshold, err)
		}
		h.changed(now, why)
	case remind:
		h.stillUnhealthy(err)
	}
}
