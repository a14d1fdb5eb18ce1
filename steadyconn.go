package main

import (
	"bufio"
	"net"
	"net/http"
	"time"
)

// The WebSocket library sets the socket's write deadline before every frame it writes,
// to whatever deadline the connection holds. writePump sets none (the hub's watchdog
// ends a stuck write instead), so on every frame the library sets the deadline to "none"
// again: a poller lock and a timer update inside the runtime for each of hundreds of
// thousands of frames a second, changing nothing. A steadyConn skips exactly those
// calls. Everything else, and every deadline that does change (the close frame's, the
// read deadlines), reaches the socket as before.

// steadyConn is a server-side TCP connection that ignores a SetWriteDeadline equal to
// the one already set. It embeds *net.TCPConn rather than net.Conn so that the
// library's gathered writes (a frame header and a payload larger than the write
// buffer, written with writev) keep their single system call: the standard library
// takes that path only for its own connection types and what embeds them.
//
// last is only read and written inside SetWriteDeadline, which the library calls with
// its write lock held (every write and control frame); nothing else here sets a write
// deadline on the socket directly.
type steadyConn struct {
	*net.TCPConn
	last time.Time // the write deadline the socket holds; zero: none
}

// SetWriteDeadline sets the socket's write deadline when t differs from the one it
// holds.
func (s *steadyConn) SetWriteDeadline(t time.Time) error {
	if t.Equal(s.last) {
		return nil
	}
	if err := s.TCPConn.SetWriteDeadline(t); err != nil {
		return err
	}
	s.last = t
	return nil
}

// SetDeadline sets both deadlines, keeping last true.
func (s *steadyConn) SetDeadline(t time.Time) error {
	if err := s.TCPConn.SetDeadline(t); err != nil {
		return err
	}
	s.last = t
	return nil
}

// steadyHijacker is the ResponseWriter the upgrader is given: it hands over the
// hijacked connection as a steadyConn when it is plain TCP. A TLS connection (the
// server's own certificates, tls.go) is handed over as it is.
type steadyHijacker struct {
	http.ResponseWriter
}

// Hijack takes the connection over from the HTTP server, which has cleared its
// deadlines (so a zero last is true from the start).
func (w steadyHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nc, brw, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		return &steadyConn{TCPConn: tc}, brw, nil
	}
	return nc, brw, nil
}

// Unwrap lets http.ResponseController reach the server's own writer.
func (w steadyHijacker) Unwrap() http.ResponseWriter { return w.ResponseWriter }
