package election

import (
	"testing"
	"time"
)

func TestValidateTimings(t *testing.T) {
	tests := []struct {
		ttl, renew, retry time.Duration
		wantErr           string
	}{
		{10 * time.Second, 10 * time.Second / 3, 10 * time.Second / 6, ""},
		{2 * time.Second, 1500 * time.Millisecond, time.Second / 3, ""},
		{3 * time.Second, 2 * time.Second, 500 * time.Millisecond, ""},
		{time.Second, time.Second / 3, time.Second / 6, "under the minimum"},
		{2500 * time.Millisecond, 1500 * time.Millisecond, 250 * time.Millisecond, "whole number of seconds"},
		{10 * time.Second, 10 * time.Second, time.Second, "-renew-deadline: 10s must be shorter than -ttl 10s"},
		{10 * time.Second, 3 * time.Second, 2500 * time.Millisecond, "-renew-deadline: 3s must be more than 1.2 x the longer of -retry-period 2.5s"},
		{10 * time.Second, 3 * time.Second, 0, "must be positive"},
		// A renewal is seen only in a new second: a renew deadline of a
		// second or so would let the leader run out between two of them.
		{3 * time.Second, time.Second, 500 * time.Millisecond, "the precision at which followers see a renewal"},
		{5 * time.Second, 1100 * time.Millisecond, 100 * time.Millisecond, "the precision at which followers see a renewal"},
	}
	for _, tt := range tests {
		err := ValidateTimings(tt.ttl, tt.renew, tt.retry)
		if (err == nil) != (tt.wantErr == "") || err != nil && !contains(err.Error(), tt.wantErr) {
			t.Errorf("ValidateTimings(%s, %s, %s) = %v, want %q", tt.ttl, tt.renew, tt.retry, err, tt.wantErr)
		}
	}
}

func TestDefaultTimingsAreValid(t *testing.T) {
	for ttl := MinTTL; ttl <= 10*time.Minute; ttl += time.Second {
		renew, retry := DefaultTimings(ttl)
		if err := ValidateTimings(ttl, renew, retry); err != nil {
			t.Errorf("DefaultTimings(%s) = %s, %s: %v", ttl, renew, retry, err)
		}
	}
}

func TestParseLockType(t *testing.T) {
	for _, l := range LockTypes {
		if got, err := ParseLockType(string(l)); err != nil || got != l {
			t.Errorf("ParseLockType(%s) = %s, %v", l, got, err)
		}
	}
	if _, err := ParseLockType("lease"); err == nil || !contains(err.Error(), "valid: leases, configmaps, endpoints") {
		t.Errorf("ParseLockType(lease) = %v, want an error listing the valid types", err)
	}
}
