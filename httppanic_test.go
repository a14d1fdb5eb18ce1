package main

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestHTTPPanicRecovered: a handler that panics before writing is answered exactly 500
// with the fixed body and Connection: close, counted once under its mux pattern, and
// logged once at Error with the route, the panic's type and text and the stack, never
// the query string; net/http logs nothing of it (its ErrorLog is at Debug here, so a
// line would show). A panic with a struct logs its type only, never its fields. One
// that panics after its answer began is cut (the client reads a
// broken body, not a whole one) and counted under its own pattern. The same server goes
// on serving /healthz.
func TestHTTPPanicRecovered(t *testing.T) {
	testRoutes = func(mux *http.ServeMux) {
		mux.HandleFunc("GET /test/panic/{id}", func(http.ResponseWriter, *http.Request) {
			panic("injected http panic")
		})
		mux.HandleFunc("GET /test/value", func(http.ResponseWriter, *http.Request) {
			panic(struct{ Text string }{"hunter2-in-the-value"})
		})
		mux.HandleFunc("GET /test/late", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("partial"))
			w.(http.Flusher).Flush()
			panic("injected late panic")
		})
	}
	t.Cleanup(func() { testRoutes = nil })
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := testConfig(t)
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	app, err := newApp(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.shutdown(2 * time.Second) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(app.routes(), log)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	base := "http://" + ln.Addr().String()
	client := &http.Client{Timeout: 5 * time.Second}

	resp, err := client.Get(base + "/test/panic/42?token=hunter2-in-the-query")
	if err != nil {
		t.Fatalf("the panicking route: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError || string(body) != httpPanicMessage || !resp.Close {
		t.Fatalf("the panicking route: status %d, body %q, close %v; want 500, %q, close", resp.StatusCode, body, resp.Close, httpPanicMessage)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("500 Content-Type %q", ct)
	}

	resp, err = client.Get(base + "/test/value")
	if err != nil {
		t.Fatalf("the route panicking with a struct: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("the route panicking with a struct: status %d, want 500", resp.StatusCode)
	}

	resp, err = client.Get(base + "/test/late")
	if err != nil {
		t.Fatalf("the late panic: %v", err)
	}
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err == nil {
		t.Fatalf("the late panic: status %d, body %q, read error %v; want 200 and a broken body", resp.StatusCode, body, err)
	}

	resp, err = client.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("healthz after the panics: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Fatalf("healthz after the panics: %d %q", resp.StatusCode, body)
	}

	for route, want := range map[string]float64{"GET /test/panic/{id}": 1, "GET /test/late": 1, "GET /test/value": 1, "GET /healthz": 0, unmatchedRoute: 0} {
		if n := testutil.ToFloat64(app.metrics.httpPanics.WithLabelValues(route)); n != want {
			t.Errorf("http panics for %q: %v, want %v", route, n, want)
		}
	}
	out := logs.String()
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "http handler failed") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 3 {
		t.Fatalf("%d `http handler failed` lines, want 3; log:\n%s", len(lines), out)
	}
	if !strings.Contains(lines[1], `route="GET /test/value" panic_type="struct { Text string }" panic=""`) {
		t.Errorf("the struct panic's line: %s", lines[1])
	}
	for _, want := range []string{"level=ERROR", `route="GET /test/panic/{id}"`, "panic_type=string", `panic="injected http panic"`, "stack=", "TestHTTPPanicRecovered"} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("the log line lacks %q: %s", want, lines[0])
		}
	}
	for _, bad := range []string{"hunter2", "/test/panic/42", "panic serving", "http: "} {
		if strings.Contains(out, bad) {
			t.Errorf("the log holds %q:\n%s", bad, out)
		}
	}
}
