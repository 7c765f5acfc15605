package election

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// eventTimeout bounds posting an Event. Events are for people reading
// `kubectl describe`; the election never waits on them.
const eventTimeout = 5 * time.Second

// event posts an Event of type typ (Normal or Warning) about the lock object
// in the background.
func (e *Elector) event(typ, reason, message string) {
	obs, _ := e.snapshot()
	e.eventOn(obs, typ, reason, message)
}

// eventOn posts an Event about the version obs of the lock object in the
// background. It is taken when the Event happens, not when it is posted.
func (e *Elector) eventOn(obs *observation, typ, reason, message string) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
		defer cancel()
		e.post(ctx, obs, typ, reason, message)
	}()
}

// eventSync posts the Event and returns when it is written or ctx is done.
func (e *Elector) eventSync(ctx context.Context, typ, reason, message string) {
	obs, _ := e.snapshot()
	e.post(ctx, obs, typ, reason, message)
}

// post writes one Event about the version obs of the lock object.
func (e *Elector) post(ctx context.Context, obs *observation, typ, reason, message string) {
	now := metav1.NewTime(time.Now())
	ev := &event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", e.cfg.Election, now.UnixNano()),
			Namespace: e.cfg.Namespace,
		},
		InvolvedObject:      e.lock.reference(obs),
		Reason:              reason,
		Message:             message,
		Type:                typ,
		Source:              eventSource{Component: "k8s-elector"},
		ReportingController: "vapor.io/k8s-elector",
		ReportingInstance:   e.cfg.ID,
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
	}
	err := e.core.Post().Namespace(e.cfg.Namespace).Resource("events").Body(ev).Do(ctx).Error()
	if err != nil {
		e.metrics.apiError("event")
		e.log.V(1).Info("could not post an event", "reason", reason, "err", err.Error())
	}
}
