package main

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestHubBacklogTickerOnlyWhileBacklogged: the hub's backlog ticker runs only while
// some client has a backlog. The test runs in a synctest bubble, so the ticks come
// from the bubble's clock: a backlog is moved into a queue that has room on the next
// tick, with no new event in the room and no real time passing.
func TestHubBacklogTickerOnlyWhileBacklogged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTestHub(t, func(c *Config) { c.SendBacklog = 100 })
		ticking := func() (on bool) {
			h.do(func() { on = h.backlogTicking })
			return on
		}
		lagging, sender := fakeClient("lagging", 4), fakeClient("sender", 1024)
		h.register <- lagging
		h.register <- sender
		drain(t, h, lagging)
		drain(t, h, sender)
		time.Sleep(time.Second) // the bubble's clock
		if ticking() {
			t.Fatal("the backlog ticker runs with no backlog")
		}
		const sent = 10
		for i := range sent {
			h.inbound <- sayCmd(sender, lobby, string(rune('a'+i)))
		}
		if !ticking() {
			t.Fatal("a client has a backlog, but the ticker is off")
		}
		got := 0
		start := time.Now()
		for got < sent {
			select {
			case <-lagging.send:
				got++
			default:
				// Only a tick can move the rest in now.
				time.Sleep(backlogFlushEvery)
			}
			if time.Since(start) > time.Minute {
				t.Fatalf("%d of %d events reached the lagging client", got, sent)
			}
		}
		if ticking() {
			t.Fatal("the backlog is gone, but the ticker still runs")
		}
	})
}

// TestHubHalts: Hub.halt ends the loop, and what would have talked to it afterwards
// does not block (a readPump posting a command during a shutdown that outlasted its
// grace).
func TestHubHalts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newTestHub(t, nil)
		h.app.shutdown(time.Second)
		select {
		case <-h.stopped:
		default:
			t.Fatal("the hub's loop still runs after shutdown")
		}
		c := fakeClient("late", 4)
		h.post(command{client: c, env: &envelope{Type: "rooms"}})
		// synctest.Test returns only once every goroutine of the bubble (hub,
		// writer, janitor) has ended.
	})
}
