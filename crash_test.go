package main

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

// childEnv marks a re-executed test binary that should run the real server instead of
// tests: the crash test kills it with SIGKILL, which it cannot do to itself.
const childEnv = "CHAT_TEST_SERVER_CHILD"

// TestMain runs the server when re-executed as a child, the tests otherwise, and then
// fails the run if any goroutine is left over: every App a test starts must stop all of
// its own (hub loop, pumps, timers, store writer, janitor) when the test ends.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		// Configuration comes from the CHAT_ environment twins, as in production.
		cfg, err := parseConfig(nil, os.Getenv)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if err := run(cfg, slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// freePort finds a loopback port nobody listens on.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// childServer is the server running in a child process. Its log is read line by line:
// ready and reloaded receive when it says it listens and when it has re-read its
// policy, so tests wait on those instead of polling.
type childServer struct {
	*exec.Cmd
	ready, reloaded chan struct{}
}

// startChild runs the server in a child process on dir and waits until it listens;
// extra holds more NAME=value settings (the cluster tests' Redis and keys). The child
// stops by itself after a minute in any case.
func startChild(t *testing.T, dir, port string, extra ...string) *childServer {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1",
		"CHAT_ADDR=127.0.0.1:"+port, "CHAT_DATA_DIR="+dir, "CHAT_STORE=bolt",
		"CHAT_METRICS_ADDR=127.0.0.1:0", "CHAT_ADMINS=dev:root",
		"CHAT_MSG_BURST=1000", "CHAT_USER_MSG_BURST=1000", "CHAT_MSG_RATE=1000", "CHAT_USER_MSG_RATE=1000")
	cmd.Env = append(cmd.Env, extra...)
	// The child writes its log straight into a pipe of ours (no copying goroutine
	// in os/exec); the pipe ends when the child does.
	logR, logW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = io.Discard, logW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logW.Close()
	child := &childServer{Cmd: cmd, ready: make(chan struct{}, 1), reloaded: make(chan struct{}, 16)}
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer logR.Close()
		lines := bufio.NewScanner(logR)
		for lines.Scan() {
			line := lines.Text()
			if testing.Verbose() {
				fmt.Fprintln(os.Stderr, line)
			}
			switch {
			case strings.Contains(line, "msg=listening"):
				child.ready <- struct{}{}
			case strings.Contains(line, `msg="policy reloaded"`):
				child.reloaded <- struct{}{}
			}
		}
	}()
	timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	t.Cleanup(func() { timer.Stop(); cmd.Process.Kill(); cmd.Wait(); <-read })
	child.await(t, child.ready, "the child server to listen")
	return child
}

// await waits for a signal from the child's log, failing after 10 s.
func (c *childServer) await(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestKill9KeepsAcknowledgedState: state changes acknowledged by a server process are
// all there after it is killed with SIGKILL in the middle of a stream of writes and
// restarted, and the store opens cleanly.
func TestKill9KeepsAcknowledgedState(t *testing.T) {
	dir, port := t.TempDir(), freePort(t)
	child := startChild(t, dir, port)
	ts := &testServer{URL: "http://127.0.0.1:" + port}
	root := ts.user(t, "root")
	root.mustAck(map[string]any{"type": "create", "room": "vault", "private": true})
	root.mustAck(map[string]any{"type": "set_role", "user": "dev:mod", "role": "moderator"})

	// A stream of invitations; kill the server after 20 acks while more are in flight.
	const sent = 60
	for i := 0; i < sent; i++ {
		root.send(map[string]any{"type": "invite", "room": "vault", "user": fmt.Sprintf("dev:guest%d", i), "ref": strconv.Itoa(i)})
	}
	var acked []int
	for len(acked) < 20 {
		ev, err := root.next(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ev["type"] == "ack" {
			n, _ := strconv.Atoi(ev["ref"].(string))
			acked = append(acked, n)
		}
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	child.Wait()

	startChild(t, dir, port)
	if ev := ts.user(t, "mod").cmd(map[string]any{"type": "kick", "room": "lobby", "user": "dev:nobody"}); ev["type"] != "ack" {
		t.Fatalf("the moderator role acknowledged before kill -9 is lost: a kick answered %v", ev)
	}
	for _, n := range acked {
		guest := ts.user(t, fmt.Sprintf("guest%d", n))
		if ev := guest.cmd(map[string]any{"type": "join", "room": "vault"}); ev["type"] != "joined" {
			t.Fatalf("the invitation of dev:guest%d (ref %d, acknowledged before kill -9) is lost: the join answered %v", n, n, ev)
		}
		guest.conn.Close()
	}
	ts.user(t, "stranger").mustRefuse(map[string]any{"type": "join", "room": "vault"}, codeNoSuchRoom)
}

// TestSIGTERMGracefulShutdown: on SIGTERM the real server process tells its clients
// 1001, reports not ready, and exits with status 0.
func TestSIGTERMGracefulShutdown(t *testing.T) {
	dir, port := t.TempDir(), freePort(t)
	child := startChild(t, dir, port)
	ts := &testServer{URL: "http://127.0.0.1:" + port}
	a := ts.user(t, "alice")
	if err := child.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	a.expectClose(websocket.CloseGoingAway)
	if err := child.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if code := child.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
