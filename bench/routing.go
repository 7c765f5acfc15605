package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vapor-ware/k8s-elector/internal/routing"
	"github.com/vapor-ware/k8s-elector/pkg/election"
)

// routedElection is the election, and the Service, of the leader-only
// routing figures.
const routedElection = "routed"

// routing times leader-only routing: rounds graceful handovers among three
// participants run with -leader-service, each leader replaced by a new
// participant, watched on the Service's EndpointSlice beside the lock (see
// routing.Check). It reports how long the Service had no endpoint at each
// handover against how long the lock took to change hands, and every
// version of the slice that listed two addresses or one that did not hold
// the lock.
func (b *bench) routing(rounds int) ([]row, error) {
	fmt.Fprintf(os.Stderr, "bench: %d handovers with -leader-service among 3 participants\n", rounds)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	_, err := b.env.Client.CoreV1().Services("default").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: routedElection, Annotations: map[string]string{election.AnnotationElection: routedElection}},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	log, err := routing.Watch(ctx, b.env.Client, "default", routedElection, routedElection)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	ipOf := map[string]string{}
	var procs []*proc
	defer func() { b.stop(procs) }()
	start := func(n int) error {
		id := fmt.Sprintf("r%d", n)
		ipOf[id] = fmt.Sprintf("10.3.%d.%d", n/250, n%250+1)
		p, err := b.start(b.bin, id, routedElection, "-leader-service="+routedElection, "-pod-name=pod-"+id, "-pod-ip="+ipOf[id])
		if err == nil {
			procs = append(procs, p)
		}
		return err
	}
	waitListed := func(p *proc) error {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if log.Listed() == ipOf[p.id] {
				return nil
			}
		}
		return fmt.Errorf("the slice does not list leader %s", p.id)
	}
	for n := range 3 {
		if err := start(n); err != nil {
			return nil, err
		}
	}
	for n := range rounds {
		leader, err := waitLeader(procs, 30*time.Second)
		if err != nil {
			return nil, err
		}
		if err := waitListed(leader); err != nil {
			return nil, err
		}
		// At a varying point of the leader's renewal cycle.
		time.Sleep(time.Duration(300+n%7*150) * time.Millisecond)
		b.stop([]*proc{leader})
		procs = slices.DeleteFunc(procs, func(p *proc) bool { return p == leader })
		if err := start(3 + n); err != nil {
			return nil, err
		}
	}
	leader, err := waitLeader(procs, 30*time.Second)
	if err == nil {
		err = waitListed(leader)
	}
	if err != nil {
		return nil, err
	}
	log.Close()
	r := log.Check(ipOf)
	for _, v := range r.Violations {
		fmt.Fprintln(os.Stderr, "bench: leader-only routing:", v)
	}
	return []row{
		{name: fmt.Sprintf("leader-only routing, %d handovers: lock released to taken, median / p99", len(r.Handovers)),
			value: quantile(r.Handovers, 50) + " / " + quantile(r.Handovers, 99)},
		{name: "leader-only routing: Service without an endpoint, median / p99 / max",
			value: quantile(r.Gaps, 50) + " / " + quantile(r.Gaps, 99) + " / " + quantile(r.Gaps, 100)},
		{name: "leader-only routing: slice versions with two addresses, or one not holding the lock",
			value: fmt.Sprint(len(r.Violations)), goal: "0", verdict: verdict(len(r.Violations) == 0 && len(r.Gaps) == rounds)},
	}, nil
}

// quantile is the q-th percentile of ds, as ms; "-" for none.
func quantile(ds []time.Duration, q int) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return ms(s[(len(s)*q-1)/100])
}
