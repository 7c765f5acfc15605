package election

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"time"
)

// simPlan is one simulated schedule: the election's settings, the network,
// and what happens when. A plan is made from a seed by a family's generator
// and can be written down, so a schedule that once failed is replayed as it
// was even after the generators change.
type simPlan struct {
	Seed   uint64 `json:"seed"`
	Family string `json:"family"`
	// Why says, for a kept plan, what it once caught.
	Why string `json:"why,omitempty"`

	Lock LockType    `json:"lock"`
	TTL  simDuration `json:"ttl"`
	// RenewDeadline and RetryPeriod are DefaultTimings(TTL) when zero.
	RenewDeadline simDuration `json:"renewDeadline,omitempty"`
	RetryPeriod   simDuration `json:"retryPeriod,omitempty"`
	PodLabel      bool        `json:"podLabel,omitempty"`
	// Race has every follower race for a released lock; otherwise three
	// seeds in four name a successor (Config.PreferNewest).
	Race bool `json:"race,omitempty"`
	// Offset is where in a second of the clock the schedule starts: it
	// decides which renewals fall in the same second.
	Offset simDuration `json:"offset"`
	// Length is how long the schedule runs, from its start.
	Length simDuration `json:"length"`
	// History is how many events the API server keeps for watches from a
	// resourceVersion.
	History int          `json:"history"`
	Net     simNetParams `json:"net"`
	Events  []simAction  `json:"events"`
	// Tamper breaks the elector on purpose, to show that the invariant
	// catches a broken one: "renew-deadline" lets a leader call itself
	// leader for three TTLs without renewing.
	Tamper string `json:"tamper,omitempty"`
}

// simAction is one thing that happens in a schedule.
type simAction struct {
	At simDuration `json:"at"`
	// Do is start, crash, stop, pause, partition, delete or garbage.
	Do string `json:"do"`
	// Who is the process it happens to: the n-th started, counting from
	// 0; simLeader for whoever leads at that moment (else the last leader
	// still running, else one at random); simAnyone for one at random.
	Who int `json:"who,omitempty"`
	// ID is the participant ID of a process to start; empty with SameAs
	// set, for a second process with the ID of process SameAs (which may
	// be simLeader).
	ID     string `json:"id,omitempty"`
	SameAs *int   `json:"sameAs,omitempty"`
	// For is how long a pause or a partition lasts, or after how long a
	// crashed or stopped process is started again (0: never).
	For simDuration `json:"for,omitempty"`
	// Mode: for a partition, "drop" (messages are lost, connections break)
	// or "hold" (messages arrive when it heals); for garbage, "unreadable",
	// "released" or "foreign".
	Mode string `json:"mode,omitempty"`
	// Net, for a start, replaces the plan's network for that process.
	Net *simNetParams `json:"net,omitempty"`
}

const (
	simLeader = -1
	simAnyone = -2
)

// timings returns the plan's renew deadline and retry period.
func (p *simPlan) timings() (time.Duration, time.Duration) {
	if p.RenewDeadline == 0 {
		return DefaultTimings(p.TTL.D())
	}
	return p.RenewDeadline.D(), p.RetryPeriod.D()
}

func (p *simPlan) String() string {
	rd, rp := p.timings()
	how := "default timings"
	if p.RenewDeadline != 0 {
		how = "custom timings"
	}
	return fmt.Sprintf("%s lock, ttl %s, renew deadline %s, retry %s (%s), %d events over %s",
		p.Lock, p.TTL.D(), rd, rp, how, len(p.Events), p.Length.D())
}

func simLoadPlan(path string) (*simPlan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p simPlan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &p, nil
}

// simDuration is a time.Duration written as "1.5s" in a plan.
type simDuration time.Duration

func (d simDuration) D() time.Duration { return time.Duration(d) }

func (d simDuration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *simDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = simDuration(v)
	return err
}

// simFamily makes plans of one kind from seeds. test is the test that runs
// the family, for the replay command.
type simFamily struct {
	name string
	test string
	make func(seed uint64) *simPlan
}

var simFamilies = []simFamily{
	{"random", "TestSimulate", simRandomPlan},
	{"second-precision", "TestSimSecondPrecision", simSecondPrecisionPlan},
	{"deleted-lock", "TestSimDeletedLockFreshJoiner", simDeletedLockPlan},
	{"one-id", "TestSimOneIDTwoProcesses", simOneIDPlan},
	{"stale-absence", "TestSimStaleAbsence", simStaleAbsencePlan},
	{"garbage-twice", "TestSimGarbageTwice", simGarbageTwicePlan},
	{"broken", "TestSimCatchesBrokenElector", simBrokenPlan},
}

func simFamilyNamed(name string) simFamily {
	for _, f := range simFamilies {
		if f.name == name {
			return f
		}
	}
	panic("no simulation family " + name)
}

// simGen is a seeded source for one plan.
type simGen struct{ *rand.Rand }

func newSimGen(seed uint64, family string) simGen {
	var salt uint64
	for _, c := range family {
		salt = salt*131 + uint64(c)
	}
	return simGen{rand.New(rand.NewPCG(seed, salt))}
}

// between draws a duration in [lo, hi), at microsecond resolution so that
// events rarely fall on the same instant.
func (g simGen) between(lo, hi time.Duration) simDuration {
	if hi <= lo {
		return simDuration(lo)
	}
	return simDuration(lo + time.Duration(g.Int64N(int64(hi-lo)/1000))*time.Microsecond)
}

func (g simGen) chance(p float64) bool { return g.Float64() < p }

// pick returns one of the weights' indexes, in proportion.
func (g simGen) pick(weights ...int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	n := g.IntN(total)
	for i, w := range weights {
		if n < w {
			return i
		}
		n -= w
	}
	return len(weights) - 1
}

// timings sets the plan's timings: the defaults, or custom ones that
// ValidateTimings accepts.
func (g simGen) timings(p *simPlan, custom float64) {
	if !g.chance(custom) {
		return
	}
	ttl := p.TTL.D()
	for range 20 {
		retry := time.Duration(float64(ttl) * (0.04 + 0.26*g.Float64())).Round(time.Millisecond)
		rd := time.Duration(float64(ttl) * (0.2 + 0.78*g.Float64())).Round(time.Millisecond)
		if ValidateTimings(ttl, rd, retry) == nil {
			p.RenewDeadline, p.RetryPeriod = simDuration(rd), simDuration(retry)
			return
		}
	}
}

// ttl draws a TTL from 2s to 10s, short ones more often; none under MinTTL.
func (g simGen) ttl() simDuration {
	choices := []time.Duration{2, 2, 3, 3, 4, 5, 6, 8, 10}
	ttl := max(choices[g.IntN(len(choices))]*time.Second, MinTTL.Round(time.Second))
	return simDuration(ttl)
}

func (g simGen) net(rd time.Duration) simNetParams {
	n := simNetParams{Latency: g.between(100*time.Microsecond, 5*time.Millisecond)}
	if g.chance(0.7) {
		n.Spike = 0.03 * g.Float64()
		n.SpikeMax = g.between(rd/10, rd*3/2)
	}
	if g.chance(0.5) {
		n.Drop = 0.03 * g.Float64()
	}
	if g.chance(0.5) {
		n.Lost = 0.03 * g.Float64()
	}
	if g.chance(0.5) {
		n.WatchClose = g.between(2*time.Second, 60*time.Second)
	}
	if g.chance(0.5) {
		n.WatchError = 0.2 * g.Float64()
	}
	if g.chance(0.5) {
		n.Bookmarks = g.between(time.Second, 20*time.Second)
	}
	n.ForbidWatch = g.chance(0.1)
	return n
}

// worse is n with its faults made more likely.
func (g simGen) worse(n simNetParams, rd time.Duration) simNetParams {
	n.Latency = simDuration(n.Latency.D() * time.Duration(1+g.IntN(10)))
	n.Spike = min(1, 3*n.Spike+0.02)
	if n.SpikeMax == 0 {
		n.SpikeMax = simDuration(rd)
	}
	n.Drop = min(1, 3*n.Drop+0.02)
	n.Lost = min(1, 3*n.Lost+0.02)
	n.ForbidWatch = n.ForbidWatch || g.chance(0.2)
	return n
}

func (g simGen) lock(weights ...int) LockType {
	return []LockType{LockLeases, LockConfigMaps, LockEndpoints}[g.pick(weights...)]
}

// simRandomPlan is any schedule: any lock, TTL and timings, a few
// participants, a faulty network, and up to eight faults of every kind.
func simRandomPlan(seed uint64) *simPlan {
	g := newSimGen(seed, "random")
	p := &simPlan{Seed: seed, Family: "random", TTL: g.ttl(), History: 2 + g.IntN(50)}
	p.Lock = g.lock(55, 35, 10)
	g.timings(p, 0.5)
	ttl := p.TTL.D()
	rd, _ := p.timings()
	p.PodLabel = g.chance(0.3)
	p.Offset = g.between(0, time.Second)
	p.Length = simDuration(time.Duration(float64(ttl) * (4 + 4*g.Float64())))
	p.Net = g.net(rd)

	ids := 0
	start := func(at time.Duration) {
		a := simAction{At: simDuration(at), Do: "start", ID: fmt.Sprintf("p%d", ids)}
		ids++
		if g.chance(0.3) {
			n := g.worse(p.Net, rd)
			a.Net = &n
		}
		p.Events = append(p.Events, a)
	}
	participants := 2 + g.IntN(2)
	for i := range participants {
		at := time.Duration(0)
		if i > 0 {
			at = g.between(0, 2*time.Second).D()
		}
		start(at)
	}
	faults := g.IntN(9)
	last := p.Length.D() - 2*ttl
	for range faults {
		at := g.between(time.Second, max(last, 2*time.Second)).D()
		who := simLeader
		if g.chance(0.4) {
			who = simAnyone
		}
		long := g.between(100*time.Millisecond, 5*ttl/2)
		switch g.pick(25, 15, 15, 10, 8, 7, 10, 5) {
		case 0:
			p.Events = append(p.Events, simAction{At: simDuration(at), Do: "partition", Who: who, For: long, Mode: []string{"drop", "hold"}[g.IntN(2)]})
		case 1:
			p.Events = append(p.Events, simAction{At: simDuration(at), Do: "pause", Who: who, For: long})
		case 2:
			a := simAction{At: simDuration(at), Do: "crash", Who: who}
			if g.chance(0.7) {
				a.For = g.between(0, 2*ttl)
			}
			p.Events = append(p.Events, a)
		case 3:
			a := simAction{At: simDuration(at), Do: "stop", Who: who}
			if g.chance(0.5) {
				a.For = g.between(0, 2*ttl)
			}
			p.Events = append(p.Events, a)
		case 4:
			p.Events = append(p.Events, simAction{At: simDuration(at), Do: "delete"})
		case 5:
			p.Events = append(p.Events, simAction{At: simDuration(at), Do: "garbage", Mode: []string{"unreadable", "foreign"}[g.IntN(2)]})
		case 6:
			start(at)
		case 7:
			same := who
			p.Events = append(p.Events, simAction{At: simDuration(at), Do: "start", SameAs: &same})
		}
	}
	p.sortEvents()
	return p
}

// simSecondPrecisionPlan: a ConfigMap lock (whole seconds), a TTL of 3s
// with a renew deadline of 2s and a retry of 0.5s, or another short TTL,
// and the leader cut off at a random instant. Renewals that fall in the
// second of the one before change nothing a follower can see, so a
// follower times the lease from the first renewal of that second, up to a
// second before the leader's last.
func simSecondPrecisionPlan(seed uint64) *simPlan {
	g := newSimGen(seed, "second-precision")
	p := &simPlan{Seed: seed, Family: "second-precision", History: 50}
	p.Lock = g.lock(0, 80, 20)
	type timing struct{ ttl, rd, rp time.Duration }
	var valid []timing
	for _, c := range []timing{
		{3 * time.Second, 2 * time.Second, 500 * time.Millisecond},
		{3 * time.Second, 2500 * time.Millisecond, 500 * time.Millisecond},
		{2 * time.Second, 1500 * time.Millisecond, 500 * time.Millisecond},
		{2 * time.Second, 1900 * time.Millisecond, 200 * time.Millisecond},
		{4 * time.Second, 3500 * time.Millisecond, 700 * time.Millisecond},
		{time.Second, 0, 0},
		{2 * time.Second, 0, 0},
		{3 * time.Second, 0, 0},
	} {
		rd, rp := c.rd, c.rp
		if rd == 0 {
			rd, rp = DefaultTimings(c.ttl)
		}
		if ValidateTimings(c.ttl, rd, rp) == nil {
			valid = append(valid, c)
		}
	}
	c := valid[g.IntN(len(valid))]
	p.TTL, p.RenewDeadline, p.RetryPeriod = simDuration(c.ttl), simDuration(c.rd), simDuration(c.rp)
	ttl := c.ttl
	p.Offset = g.between(0, time.Second)
	p.Net = simNetParams{Latency: g.between(100*time.Microsecond, 3*time.Millisecond)}
	n := 2 + g.IntN(2)
	for i := range n {
		p.Events = append(p.Events, simAction{At: g.between(0, time.Duration(i)*300*time.Millisecond), Do: "start", ID: fmt.Sprintf("p%d", i)})
	}
	at := g.between(3*ttl, 5*ttl)
	cut := g.between(3*ttl/2, 3*ttl)
	p.Events = append(p.Events, simAction{At: at, Do: "partition", Who: simLeader, For: cut, Mode: []string{"drop", "hold"}[g.IntN(2)]})
	p.Length = simDuration(at.D() + cut.D() + 3*ttl)
	p.sortEvents()
	return p
}

// simDeletedLockPlan: the lock is deleted while its leader is cut off from
// the API server, and a participant that never saw it joins at once.
func simDeletedLockPlan(seed uint64) *simPlan {
	g := newSimGen(seed, "deleted-lock")
	p := &simPlan{Seed: seed, Family: "deleted-lock", TTL: g.ttl(), History: 50}
	p.Lock = g.lock(50, 40, 10)
	g.timings(p, 0.3)
	ttl := p.TTL.D()
	rd, _ := p.timings()
	p.Offset = g.between(0, time.Second)
	p.Net = simNetParams{Latency: g.between(100*time.Microsecond, 3*time.Millisecond)}
	p.Events = []simAction{
		{At: 0, Do: "start", ID: "p0"},
		{At: g.between(0, time.Second), Do: "start", ID: "p1"},
	}
	at := g.between(2*ttl, 4*ttl)
	cut := g.between(3*ttl/2, 3*ttl)
	del := at.D() + g.between(0, rd/2).D()
	p.Events = append(p.Events,
		simAction{At: at, Do: "partition", Who: simLeader, For: cut, Mode: []string{"drop", "hold"}[g.IntN(2)]},
		simAction{At: simDuration(del), Do: "delete"},
		simAction{At: simDuration(del) + g.between(time.Millisecond, rd/2), Do: "start", ID: "joiner"},
	)
	p.Length = simDuration(at.D() + cut.D() + 3*ttl)
	p.sortEvents()
	return p
}

// simOneIDPlan: a second process starts with the leader's ID while the
// first still runs (a restarted container whose old process is frozen or
// cut off, or a mistake in the IDs).
func simOneIDPlan(seed uint64) *simPlan {
	g := newSimGen(seed, "one-id")
	p := &simPlan{Seed: seed, Family: "one-id", TTL: g.ttl(), History: 50}
	p.Lock = g.lock(50, 40, 10)
	g.timings(p, 0.3)
	ttl := p.TTL.D()
	p.Offset = g.between(0, time.Second)
	p.Net = simNetParams{Latency: g.between(100*time.Microsecond, 3*time.Millisecond)}
	p.Events = []simAction{
		{At: 0, Do: "start", ID: "p0"},
		{At: g.between(0, time.Second), Do: "start", ID: "p1"},
	}
	at := g.between(2*ttl, 4*ttl)
	leader := simLeader
	p.Events = append(p.Events, simAction{At: at, Do: "start", SameAs: &leader})
	switch g.IntN(3) {
	case 1:
		p.Events = append(p.Events, simAction{At: at - g.between(0, ttl/2), Do: "pause", Who: simLeader, For: g.between(ttl/2, 2*ttl)})
	case 2:
		p.Events = append(p.Events, simAction{At: at - g.between(0, ttl/2), Do: "partition", Who: simLeader, For: g.between(ttl/2, 2*ttl), Mode: "drop"})
	}
	p.Length = simDuration(at.D() + 4*ttl)
	p.sortEvents()
	return p
}

// simStaleAbsencePlan: a participant sees the lock missing and is then cut
// off (its messages held, not lost) while another makes the lock and leads.
// The lock is deleted while its leader is cut off too, and the first
// participant's connection comes back: the requests it sent while cut off
// arrive now, and a create finds the lock missing again. Having seen it
// missing long ago must not count as having seen it missing for a lease.
func simStaleAbsencePlan(seed uint64) *simPlan {
	g := newSimGen(seed, "stale-absence")
	p := &simPlan{Seed: seed, Family: "stale-absence", TTL: g.ttl(), History: 50}
	p.Lock = g.lock(50, 40, 10)
	g.timings(p, 0.3)
	ttl := p.TTL.D()
	rd, _ := p.timings()
	p.Offset = g.between(0, time.Second)
	p.Net = simNetParams{Latency: g.between(100*time.Microsecond, 3*time.Millisecond)}
	late := 1
	p.Events = []simAction{
		{At: 0, Do: "start", ID: "p0"},
		{At: g.between(50*time.Millisecond, 200*time.Millisecond), Do: "start", ID: "late"},
	}
	del := g.between(2*ttl, 3*ttl)
	heal := del.D() + g.between(time.Millisecond, rd/2).D()
	at := g.between(300*time.Millisecond, 600*time.Millisecond)
	p.Events = append(p.Events,
		simAction{At: at, Do: "partition", Who: late, For: simDuration(heal - at.D()), Mode: "hold"},
		simAction{At: del - g.between(0, rd/4), Do: "partition", Who: 0, For: simDuration(2 * ttl), Mode: "drop"},
		simAction{At: del, Do: "delete"},
	)
	p.Length = simDuration(heal + 3*ttl)
	p.sortEvents()
	return p
}

// simGarbageTwicePlan: the lock is overwritten with the same unreadable
// record twice. In between, a participant is cut off (its messages held)
// while another takes the lock over, and the leader is cut off just before
// the second overwrite. The participant that comes back sees a record equal
// to the last one it saw, but the lock changed in between: it must time
// the lease from now. It misses the versions between because it polls (it
// may not watch), or because its watch breaks and the server no longer has
// them.
func simGarbageTwicePlan(seed uint64) *simPlan {
	g := newSimGen(seed, "garbage-twice")
	p := &simPlan{Seed: seed, Family: "garbage-twice", TTL: g.ttl(), History: 1}
	p.Lock = g.lock(40, 40, 20)
	g.timings(p, 0.3)
	ttl := p.TTL.D()
	rd, _ := p.timings()
	p.Offset = g.between(0, time.Second)
	p.Net = simNetParams{Latency: g.between(100*time.Microsecond, 3*time.Millisecond), ForbidWatch: g.chance(0.5)}
	mode := "hold"
	if !p.Net.ForbidWatch {
		mode = "drop"
	}
	for i := range 3 {
		p.Events = append(p.Events, simAction{At: g.between(0, time.Duration(i)*200*time.Millisecond), Do: "start", ID: fmt.Sprintf("p%d", i)})
	}
	first := g.between(2*ttl, 3*ttl).D()
	second := first + g.between(13*ttl/10, 18*ttl/10).D()
	heal := second + g.between(time.Millisecond, rd/2).D()
	cut := first + g.between(ttl/10, ttl/2).D()
	p.Events = append(p.Events,
		simAction{At: simDuration(first), Do: "garbage", Mode: "unreadable"},
		simAction{At: simDuration(cut), Do: "partition", Who: simAnyone, For: simDuration(heal - cut), Mode: mode},
		simAction{At: simDuration(second) - g.between(0, rd/4), Do: "partition", Who: simLeader, For: simDuration(2 * ttl), Mode: "drop"},
		simAction{At: simDuration(second), Do: "garbage", Mode: "unreadable"},
	)
	p.Length = simDuration(heal + 3*ttl)
	p.sortEvents()
	return p
}

// simBrokenPlan is a random schedule whose leader is cut off for twice the
// TTL, run by electors that call themselves leader for three TTLs without
// renewing: the invariant must catch it.
func simBrokenPlan(seed uint64) *simPlan {
	p := simRandomPlan(seed)
	p.Family, p.Tamper = "broken", "renew-deadline"
	ttl := p.TTL.D()
	g := newSimGen(seed, "broken")
	p.Events = append(p.Events, simAction{At: g.between(2*ttl, 3*ttl), Do: "partition", Who: simLeader, For: simDuration(2 * ttl), Mode: "drop"})
	p.Length = simDuration(max(p.Length.D(), 6*ttl))
	p.sortEvents()
	return p
}

// sortEvents orders the events by time, keeping the order of simultaneous
// ones.
func (p *simPlan) sortEvents() {
	ev := p.Events
	for i := 1; i < len(ev); i++ {
		for j := i; j > 0 && ev[j].At < ev[j-1].At; j-- {
			ev[j], ev[j-1] = ev[j-1], ev[j]
		}
	}
}
