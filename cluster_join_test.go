package main

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestClusterJoinRightAfterInvite: an invitee on node 2 who joins a private room the
// moment alice's invite on node 1 is acked gets in, although node 2, which follows the
// room (bob is there), has not applied the invitation yet: before each invite every
// node's PUB/SUB connection is cut (CLIENT KILL TYPE pubsub), so node 2 learns of the
// entry only when it has resubscribed and caught up from the Stream (until it has
// resubscribed it answers unavailable, and the invitee tries again). Node 2 looks at
// the room's revision in Redis before answering no_such_room and takes the join once
// it has the entry. Ten invitees in a row.
func TestClusterJoinRightAfterInvite(t *testing.T) {
	rs, nodes := startPair(t, "CHAT_IP_HANDSHAKE_RATE=1000", "CHAT_IP_HANDSHAKE_BURST=1000", "CHAT_LOGIN_RATE=1000", "CHAT_LOGIN_BURST=1000")
	alice := ready(nodes[0].dialAs(t, "alice"))
	alice.mustAck(map[string]any{"type": "create", "room": "den", "private": true})
	bob := ready(nodes[1].dialAs(t, "bob"))
	alice.mustAck(map[string]any{"type": "invite", "room": "den", "user": "dev:bob"})
	bob.mustKeep(map[string]any{"type": "join", "room": "den"})
	for i := range 10 {
		name := "guest" + strconv.Itoa(i)
		for _, nd := range nodes {
			waitFor(t, "the node ready again", func() bool { return readyz(nd.ts) == http.StatusOK })
		}
		g := ready(nodes[1].dialAs(t, name))
		redisCommand(t, rs.Addr(), "CLIENT", "KILL", "TYPE", "pubsub")
		alice.mustAck(map[string]any{"type": "invite", "room": "den", "user": "dev:" + name})
		j := g.keep(map[string]any{"type": "join", "room": "den"})
		for deadline := time.Now().Add(3 * time.Second); j["code"] == codeUnavailable && time.Now().Before(deadline); {
			// Node 2 is resubscribing: it says so, and a client tries again.
			time.Sleep(20 * time.Millisecond)
			j = g.keep(map[string]any{"type": "join", "room": "den"})
		}
		if j["type"] != "joined" {
			t.Fatalf("%s's join on node 2 right after the invite on node 1: %v %v", name, j["code"], j["message"])
		}
	}
}

// redisCommand sends one command to the Redis at addr (RESP, as an admin would with
// redis-cli), fails unless it is answered without an error, and returns the answer's
// first line (":1", "+OK", ...).
func redisCommand(t *testing.T, addr string, args ...string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "*" + strconv.Itoa(len(args)) + "\r\n"
	for _, a := range args {
		req += "$" + strconv.Itoa(len(a)) + "\r\n" + a + "\r\n"
	}
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || strings.HasPrefix(line, "-") {
		t.Fatalf("redis %v: %q %v", args, line, err)
	}
	return strings.TrimSpace(line)
}

// TestClusterFailedCreateUnlisted: a room whose first record never reaches Redis gives
// its place in the rooms index back. A rogue client has put a string where the room's
// Stream goes, so the say script fails on it after the place was reserved (reading the
// record works): alice's create is unavailable, and the index (which counts against
// -max-rooms) does not keep "ghost"; a room made next is listed as usual.
func TestClusterFailedCreateUnlisted(t *testing.T) {
	rs, nodes := startPair(t)
	alice := ready(nodes[0].dialAs(t, "alice"))
	redisCommand(t, rs.Addr(), "SET", "mc:{r:ghost}:log", "not a stream")
	if ev := alice.keep(map[string]any{"type": "create", "room": "ghost"}); ev["code"] != codeUnavailable {
		t.Fatalf("create on a broken Stream key: %v", ev)
	}
	waitFor(t, "ghost out of the rooms index", func() bool {
		return redisCommand(t, rs.Addr(), "HEXISTS", "mc:{g}:rooms", "ghost") == ":0"
	})
	alice.mustKeep(map[string]any{"type": "create", "room": "real"})
	waitFor(t, "real in the rooms index", func() bool {
		return redisCommand(t, rs.Addr(), "HEXISTS", "mc:{g}:rooms", "real") == ":1"
	})
}
