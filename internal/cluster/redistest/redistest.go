// Package redistest starts a real redis-server for tests: on a free loopback port, in
// a temporary directory, with the durability the cluster requires (AOF, fsync on every
// write), and stops it by itself. Tests that need it skip, saying why, when
// redis-server is not installed (`make deps` installs it; CI runs that first).
package redistest

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tunables of the test server.
const (
	// lifetime bounds how long a server may live whatever the test does: a test that
	// hangs must not leave redis-server running after the test binary is gone.
	lifetime = 5 * time.Minute
	// startWait bounds how long the server may take to answer PING.
	startWait = 10 * time.Second
)

// Server is one redis-server process.
type Server struct {
	t    testing.TB
	bin  string
	Dir  string
	Port string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs redis-server for the test and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed (run `make deps`): skipping the test that needs a real Redis")
	}
	s := &Server{t: t, bin: bin, Dir: t.TempDir(), Port: freePort(t)}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// Addr is host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + s.Port }

// URL is the redis:// URL of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// start runs the process and waits until it answers.
func (s *Server) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, "--port", s.Port, "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "yes", "--appendfsync", "always", "--dir", s.Dir,
		"--maxmemory-policy", "noeviction", "--daemonize", "no", "--loglevel", "warning")
	s.cmd.Stdout, s.cmd.Stderr = nil, nil
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	done := make(chan struct{})
	s.done = done
	cmd := s.cmd
	go func() { cmd.Wait(); close(done) }()
	timer := time.AfterFunc(lifetime, func() { cmd.Process.Kill() })
	go func() { <-done; timer.Stop() }()
	deadline := time.Now().Add(startWait)
	for !ping(s.Addr()) {
		select {
		case <-done:
			s.t.Fatalf("redis-server exited at start (%v)", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatal("redis-server did not answer PING")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill ends the server with SIGKILL, as a crash would, and waits for it to be gone.
func (s *Server) Kill() {
	s.cmd.Process.Kill()
	<-s.done
}

// Pause stops the server with SIGSTOP: its connections stay open and it answers
// nothing, as a Redis stuck on a slow disk or a full machine would. Resume undoes it;
// a paused server is still killed at the test's end.
func (s *Server) Pause() {
	s.t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.t.Fatal(err)
	}
}

// Resume lets a paused server run again (SIGCONT); harmless on a running one.
func (s *Server) Resume() { s.cmd.Process.Signal(syscall.SIGCONT) }

// Restart starts the server again on the same port and directory (its AOF).
func (s *Server) Restart() { s.t.Helper(); s.start() }

// RestartEmpty starts the server again on the same port with its data gone, as a
// Redis without persistence or a bad failover would come back.
func (s *Server) RestartEmpty() {
	s.t.Helper()
	entries, _ := os.ReadDir(s.Dir)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(s.Dir, e.Name()))
	}
	s.start()
}

// stop ends the server at the test's end.
func (s *Server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		<-s.done
	}
}

// ping reports whether a Redis answers PING at addr (inline command, no client).
func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// freePort finds a loopback port nobody listens on.
func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
