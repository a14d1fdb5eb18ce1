package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"modified-chat/internal/cluster"
	"modified-chat/internal/cluster/redistest"
)

// TestMigrateRedisHistory: the messages a single node keeps survive migrate-redis with
// their ids. On one node (bbolt) alice says three messages in den and three in the
// lobby, interleaved (one id counter serves all rooms); the server's very first message
// (id 1) is the one left behind, since its room's record needs an id below it. After
// the move a cluster node answers a join of den with those three (ids and texts), a
// `history` after the first of them with the other two and one of the lobby with its
// two, and a file in pics is fetched byte for byte; its next message in den is
// numbered after them. Running the history step again writes nothing and fails
// nothing; once the room has a live message, it is refused (cluster.ErrLive).
func TestMigrateRedisHistory(t *testing.T) {
	files := newClusterFiles(t)
	single, ts, dir := singleForMigration(t, files, "CHAT_MODERATORS=dev:alice")
	alice := ts.user(t, "alice")
	alice.mustAck(map[string]any{"type": "create", "room": "den"})
	want := map[string][]uint64{}
	texts := map[uint64]string{}
	for i, room := range []string{lobby, "den", lobby, "den", lobby, "den"} {
		text := fmt.Sprintf("before the move %d", i)
		ack := alice.cmd(map[string]any{"type": "say", "room": room, "text": text})
		id, ok := ack["id"].(float64)
		if ack["type"] != "ack" || !ok {
			t.Fatalf("say: %v", ack)
		}
		if id == 1 {
			continue // no id is left below it for the lobby's record: not moved
		}
		want[room] = append(want[room], uint64(id))
		texts[uint64(id)] = text
	}
	alice.mustAck(map[string]any{"type": "create", "room": "pics"})
	img := testPNG(t)
	alice.sendFile("pics", "dot.png", "image/png", img, "f1")
	fileID := idOf(alice.answerTo("f1"))
	single.Process.Kill()
	single.Wait()

	rs := redistest.Start(t)
	getenv := migrationEnv(dir, rs, files)
	if err := migrateRedisCommand(nil, getenv); err != nil {
		t.Fatalf("migrate-redis: %v", err)
	}
	if err := migrateHistoryAgain(t, getenv); err != nil {
		t.Fatalf("history step run again: %v", err)
	}

	n := startNodes(t, 1, rs, files)[0].ts
	erin := n.user(t, "erin")
	erin.expect("history") // the lobby's
	erin.send(map[string]any{"type": "join", "room": "den"})
	checkPage(t, erin.expect("history"), want["den"], texts)
	erin.send(map[string]any{"type": "history", "room": "den", "after": want["den"][0]})
	checkPage(t, erin.expect("history"), want["den"][1:], texts)
	erin.send(map[string]any{"type": "history", "room": lobby, "after": 0})
	checkPage(t, erin.expect("history"), want[lobby], texts)
	erin.mustAck(map[string]any{"type": "join", "room": "pics"})
	f := fetchOn(erin, "pics", fileID)
	if got, err := base64.StdEncoding.DecodeString(fmt.Sprint(f["data"])); f["type"] != "file" || idOf(f) != fileID || err != nil || !bytes.Equal(got, img) {
		t.Fatalf("fetch_file of the moved file: %v (err %v), want its bytes", f, err)
	}
	ack := erin.cmd(map[string]any{"type": "say", "room": "den", "text": "after the move"})
	if id, _ := ack["id"].(float64); ack["type"] != "ack" || uint64(id) != want["den"][2]+1 {
		t.Fatalf("first message after the move: %v, want id %d", ack, want["den"][2]+1)
	}
	if err := migrateHistoryAgain(t, getenv); !errors.Is(err, cluster.ErrLive) {
		t.Fatalf("history step over a used room: %v, want %v", err, cluster.ErrLive)
	}
}

// checkPage fails unless a history event holds exactly the messages with ids, in order,
// with their texts.
func checkPage(t *testing.T, ev map[string]any, ids []uint64, texts map[uint64]string) {
	t.Helper()
	msgs, _ := ev["messages"].([]any)
	if len(msgs) != len(ids) {
		t.Fatalf("history of %v: %d messages, want %d: %v", ev["room"], len(msgs), len(ids), ev)
	}
	for i, m := range msgs {
		m := m.(map[string]any)
		if id, _ := m["id"].(float64); uint64(id) != ids[i] || m["text"] != texts[ids[i]] {
			t.Fatalf("history of %v, message %d: %v, want id %d %q", ev["room"], i, m, ids[i], texts[ids[i]])
		}
	}
}

// migrateHistoryAgain runs migrate-redis's history step alone over the store and the
// cluster getenv names, as a second run would.
func migrateHistoryAgain(t *testing.T, getenv func(string) string) error {
	t.Helper()
	cfg, err := parseConfig(nil, getenv)
	if err != nil {
		t.Fatal(err)
	}
	st, err := openStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	state, err := loadHubState(st)
	if err != nil {
		t.Fatal(err)
	}
	cn, err := connectCluster(cfg, slog.New(slog.DiscardHandler), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err = migrateHistory(ctx, cn, st, state, cfg)
	return err
}
