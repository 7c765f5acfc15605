package main

import (
	"net"
	"sync"
	"time"
)

// cutMode is how a relay cuts a participant off from the API server.
type cutMode int

const (
	// blackHole keeps every connection open and accepts new ones, but
	// forwards nothing: requests hang until the elector's own deadlines end
	// them, as behind a silent network partition. Restoring closes the
	// connections that were black-holed (their bytes are lost) and forwards
	// new ones again.
	blackHole cutMode = iota
	// reset closes every connection and closes new ones at once, as when
	// the API server's host refuses connections.
	reset
)

func (m cutMode) String() string {
	if m == reset {
		return "reset"
	}
	return "black hole"
}

// relay is one participant's own TCP path to the API server, on loopback.
// Cutting it is a network fault of that participant alone.
type relay struct {
	target string
	addr   string
	ln     net.Listener

	mu     sync.Mutex
	cut    bool
	mode   cutMode
	conns  map[*link]struct{}
	closed bool
}

// link is one client connection and, unless it was accepted while the
// relay was cut, its upstream connection.
type link struct {
	client, upstream net.Conn
	// held: accepted or black-holed during a cut; closed on restore.
	held bool
}

func newRelay(target string) (*relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &relay{target: target, addr: ln.Addr().String(), ln: ln, conns: map[*link]struct{}{}}
	go r.accept()
	return r, nil
}

func (r *relay) accept() {
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		go r.serve(c)
	}
}

func (r *relay) serve(c net.Conn) {
	l := &link{client: c}
	r.mu.Lock()
	cut, mode, closed := r.cut, r.mode, r.closed
	if !closed && cut && mode == blackHole {
		l.held = true
		r.conns[l] = struct{}{}
	}
	r.mu.Unlock()
	switch {
	case closed || (cut && mode == reset):
		c.Close()
		return
	case cut:
		// Read and drop until restore closes it.
		go r.pump(l, c, nil)
		return
	}
	up, err := net.DialTimeout("tcp", r.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	r.mu.Lock()
	if r.closed || r.cut {
		// Cut while dialling.
		r.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	l.upstream = up
	r.conns[l] = struct{}{}
	r.mu.Unlock()
	go r.pump(l, up, c)
	r.pump(l, c, up)
}

// pump copies src to dst until either fails, dropping what it reads while
// the link is held. It closes both ends when done.
func (r *relay) pump(l *link, src, dst net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			r.mu.Lock()
			held := l.held
			r.mu.Unlock()
			if !held && dst != nil {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
		}
		if err != nil {
			break
		}
	}
	r.drop(l)
}

func (r *relay) drop(l *link) {
	r.mu.Lock()
	delete(r.conns, l)
	r.mu.Unlock()
	l.client.Close()
	if l.upstream != nil {
		l.upstream.Close()
	}
}

// Cut starts a network fault of mode.
func (r *relay) Cut(mode cutMode) {
	r.update(func() { r.cut, r.mode = true, mode }, func(l *link) bool {
		if mode == reset {
			return true
		}
		l.held = true
		return false
	})
}

// Restore ends the fault: connections that were held are closed, new ones
// are forwarded.
func (r *relay) Restore() {
	r.update(func() { r.cut = false }, func(l *link) bool { return l.held })
}

// Close stops the relay and closes every connection.
func (r *relay) Close() {
	r.update(func() { r.closed = true }, func(*link) bool { return true })
	r.ln.Close()
}

// update changes the relay's state with set, then calls visit on every
// connection, both under the lock, so that no connection slips between the
// two; it then closes the connections for which visit returned true.
func (r *relay) update(set func(), visit func(*link) bool) {
	r.mu.Lock()
	set()
	var closing []*link
	for l := range r.conns {
		if visit(l) {
			closing = append(closing, l)
		}
	}
	r.mu.Unlock()
	for _, l := range closing {
		r.drop(l)
	}
}
