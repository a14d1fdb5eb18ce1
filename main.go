// Command modified-chat is a security-first chat server: the gorilla/websocket chat
// example's hub and pumps, with login, limits, filters and rooms around them.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// HTTP server timeouts. A slow or silent client cannot hold a goroutine and a socket
// for long before it has even said what it wants.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 15 * time.Second
	writeTimeout      = 15 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
)

// main parses the configuration, then runs the server until a signal stops it. The
// operator's subcommands (backup, restore) come first, as the first argument.
func main() {
	if len(os.Args) > 1 {
		if sub, ok := subcommands[os.Args[1]]; ok {
			if err := sub(os.Args[2:], os.Getenv); err != nil {
				if errors.Is(err, flag.ErrHelp) {
					os.Exit(0)
				}
				fmt.Fprintf(os.Stderr, "modified-chat %s: %v\n", os.Args[1], err)
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
	cfg, err := parseConfig(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if cfg != nil && cfg.Version {
		printVersion(os.Stdout)
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "modified-chat:", err)
		os.Exit(2)
	}
	log := newLogger(cfg)
	gcPercent, gcFromEnv := applyGCDefault(os.Getenv)
	log.Info("garbage collector", "gogc", gcPercent, "from_env", gcFromEnv)
	if err := run(cfg, log); err != nil {
		log.Error("stopped", "err", err)
		os.Exit(1)
	}
}

// newLogger builds the structured logger the whole server uses.
func newLogger(cfg *Config) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogJSON {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// isLoopbackAddr reports whether a listen address binds to loopback only. An empty
// host (":8080") binds every interface, so it is not loopback.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// run serves until SIGINT or SIGTERM, then shuts down: readiness off, no new
// connections, every client told 1001, a bounded wait, and a nil error (exit 0).
func run(cfg *Config, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, cfg, log, nil)
}

// boundAddrs are the addresses the listeners actually got (a ":0" in the configuration
// becomes a real port), for the log and for tests.
type boundAddrs struct {
	Main, ACME, Admin string
}

// serve runs the server until ctx ends, then shuts it down gracefully. started, when
// not nil, is called once every listener is open.
func serve(ctx context.Context, cfg *Config, log *slog.Logger, started func(boundAddrs)) error {
	log.Info("starting", "version", version)
	app, err := newApp(cfg, log)
	if err != nil {
		return err
	}
	if app.dev {
		if !isLoopbackAddr(cfg.Addr) && !cfg.DevLoginAnywhere {
			app.shutdown(0)
			return fmt.Errorf("the development login (no OpenID Connect client configured) refuses to listen on %q, which is not loopback; configure OpenID Connect, or pass -dev-login-anywhere if you really mean it", cfg.Addr)
		}
		log.Warn("DEVELOPMENT LOGIN: anyone can sign in as any name; configure OpenID Connect before exposing this server")
		if !isLoopbackAddr(cfg.Addr) {
			log.Warn("DEVELOPMENT LOGIN IS EXPOSED BEYOND LOOPBACK (-dev-login-anywhere)", "addr", cfg.Addr)
		}
	}
	// Once the app exists, every way out closes it, so the store is never left open.
	defer app.shutdown(cfg.ShutdownGrace)

	var bound boundAddrs
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	bound.Main = ln.Addr().String()
	srv := newHTTPServer(app.routes(), log)

	errc := make(chan error, 2)
	scheme := "http"
	switch {
	case len(cfg.TLSAutocert) > 0:
		m, err := newCertManager(cfg, log)
		if err != nil {
			ln.Close()
			return err
		}
		// The challenge listener also tells plain-HTTP visitors where to go.
		hln, err := net.Listen("tcp", cfg.ACMEHTTPAddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("-acme-http-addr: %w", err)
		}
		bound.ACME = hln.Addr().String()
		hsrv := newHTTPServer(challengeHandler(m, httpsRedirect(cfg.TLSAutocert, bound.Main)), log)
		go func() { errc <- hsrv.Serve(hln) }()
		defer hsrv.Close()
		log.Info("ACME http-01 and redirect listening", "addr", bound.ACME)
		srv.TLSConfig = m.TLSConfig()
		srv.TLSConfig.MinVersion = tls.VersionTLS12
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
	case cfg.TLSCert != "":
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			ln.Close()
			return err
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
	}

	if cfg.MetricsAddr != "" {
		// A busy metrics port must not stop a zero-configuration start on a laptop:
		// the chat is what matters, so this only warns.
		if mln, err := net.Listen("tcp", cfg.MetricsAddr); err != nil {
			log.Warn("metrics listener not started", "addr", cfg.MetricsAddr, "err", err)
		} else {
			bound.Admin = mln.Addr().String()
			msrv := &http.Server{Handler: app.adminRoutes(), ReadHeaderTimeout: readHeaderTimeout}
			go msrv.Serve(mln)
			defer msrv.Close()
			log.Info("metrics and admin listening", "addr", bound.Admin)
		}
	}

	// SIGHUP is taken over before the server says it listens: one that arrives once
	// "listening" is logged must meet the handler, not the default action, which
	// kills the process (a supervisor, or a test, acts on that line).
	// It re-reads the role policy file without a restart.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer func() { signal.Stop(hup); close(hup) }() // ends the reload goroutine
	go func() {
		for range hup {
			if err := app.reloadPolicy(); err != nil {
				log.Error("policy reload failed; keeping the old policy", "err", err)
			} else {
				log.Info("policy reloaded")
			}
		}
	}()
	go func() {
		log.Info("listening", "url", scheme+"://"+displayAddr(bound.Main))
		errc <- srv.Serve(ln)
	}()

	if started != nil {
		started(bound)
	}

	select {
	case err := <-errc:
		srv.Close()
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	// Shutdown closes the listener and idle HTTP connections; upgraded WebSockets are
	// not tracked by net/http, so the hub closes them with 1001.
	go srv.Shutdown(sctx)
	app.shutdown(cfg.ShutdownGrace)
	log.Info("stopped")
	return nil
}

// newHTTPServer is an http.Server with the timeouts every listener of this server
// keeps, so no listener is the slow-client hole. Its ErrorLog (net/http's own complaints: bad
// handshakes, a client's TLS errors) goes to slog at Debug, too noisy for more; a
// handler's panic never reaches it: recoverHTTP logs that at Error (httppanic.go).
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

// displayAddr makes a listen address clickable in the log ("[::]:8080" stays as is).
func displayAddr(a string) string {
	return strings.Replace(a, "0.0.0.0", "localhost", 1)
}
