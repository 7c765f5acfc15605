package main

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"
)

// TestRelay checks the two ways a relay cuts a connection and that it
// forwards again once restored.
func TestRelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	r, err := newRelay(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	echo := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Write([]byte("ping\n")); err != nil {
			return err
		}
		_, err := bufio.NewReader(c).ReadString('\n')
		return err
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	c := dial()
	if err := echo(c); err != nil {
		t.Fatalf("through the relay: %v", err)
	}
	r.Cut(blackHole)
	if err := echo(c); err == nil || !isTimeout(err) {
		t.Errorf("black-holed connection: %v, want a timeout", err)
	}
	if err := echo(dial()); err == nil || !isTimeout(err) {
		t.Errorf("new connection while black-holed: %v, want a timeout", err)
	}
	r.Restore()
	if err := echo(c); err == nil || isTimeout(err) {
		t.Errorf("black-holed connection after restore: %v, want it closed", err)
	}
	c = dial()
	if err := echo(c); err != nil {
		t.Fatalf("after restore: %v", err)
	}
	r.Cut(reset)
	if err := echo(c); err == nil || isTimeout(err) {
		t.Errorf("reset connection: %v, want it closed", err)
	}
	if err := echo(dial()); err == nil || isTimeout(err) {
		t.Errorf("new connection while reset: %v, want it closed", err)
	}
	r.Restore()
	if err := echo(dial()); err != nil {
		t.Errorf("after restore: %v", err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
