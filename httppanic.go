package main

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"

	"modified-chat/internal/crash"
)

// A panic in an HTTP handler (a bug) is recovered by net/http, which logs it to the
// server's ErrorLog: newHTTPServer sends that to slog at Debug, so at the default level
// it would show nowhere and count nowhere. recoverHTTP, around the whole handler chain,
// logs it at Error and counts it by route, answers 500 when nothing was written yet,
// and ends the request itself so net/http does not log it a second time.

// unmatchedRoute is the route label of a request no pattern of the mux matches (its
// 404 and 405 come from the mux, which does not panic, but a guard in front may).
const unmatchedRoute = "unmatched"

// httpPanicMessage is the body of the 500 a panicked request gets: nothing of the
// panic or of the request.
const httpPanicMessage = "internal server error\n"

// testRoutes, when set (tests only; nil in production), adds routes to the mux as
// routes builds it: a test adds one that panics. It is called once per routes call.
var testRoutes func(mux *http.ServeMux)

// recoverHTTP wraps next, the handler chain in front of mux, so that a panic anywhere
// in it is logged with the route's pattern (mux's, a bounded set: never the raw path,
// the query, headers, cookies or the body), the panic's value and the stack, and
// counted under chat_http_panics_total{route}. A request that had written nothing is
// answered 500 and its connection closed after it; one that had (a partial answer, or
// a hijacked WebSocket) is cut with http.ErrAbortHandler, which net/http does not log,
// so the client cannot take half an answer for a whole one. A handler that panics with
// http.ErrAbortHandler itself meant to abort: that goes through untouched.
func (app *App) recoverHTTP(mux *http.ServeMux, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &trackingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			route := unmatchedRoute
			if _, pattern := mux.Handler(r); pattern != "" {
				route = pattern
			}
			app.metrics.httpPanics.WithLabelValues(route).Inc()
			kind, value := crash.Value(v)
			app.log.Error("http handler failed", "route", route, "panic_type", kind, "panic", value, "stack", string(debug.Stack()))
			if tw.wrote {
				panic(http.ErrAbortHandler)
			}
			h := w.Header()
			for k := range h {
				delete(h, k)
			}
			h.Set("Content-Type", "text/plain; charset=utf-8")
			h.Set("Content-Length", strconv.Itoa(len(httpPanicMessage)))
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Cache-Control", "no-store")
			h.Set("Connection", "close")
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(httpPanicMessage))
		}()
		next.ServeHTTP(tw, r)
	})
}

// trackingWriter is a ResponseWriter that remembers whether anything went out (a
// status, body bytes, a flush or a hijack), for recoverHTTP. It hijacks and flushes
// through to the writer it wraps (the WebSocket upgrade needs the first), and Unwrap
// lets http.ResponseController reach the rest.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

// WriteHeader notes the status went out.
func (w *trackingWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

// Write notes the answer began.
func (w *trackingWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}

// Flush notes the answer began and flushes it, if the writer can.
func (w *trackingWriter) Flush() {
	w.wrote = true
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack hands the connection over (the WebSocket upgrade); after it nothing may be
// written through the ResponseWriter, so it counts as written.
func (w *trackingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errNoHijack
	}
	w.wrote = true
	return hj.Hijack()
}

// Unwrap is the wrapped writer, for http.ResponseController.
func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// errNoHijack: the writer underneath cannot hand over its connection.
var errNoHijack = errors.New("http: the response writer does not support hijacking")
