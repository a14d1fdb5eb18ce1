package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"modified-chat/internal/store"
)

// Backup tunables.
const (
	// backupPath is the admin route that streams a backup. It lives on the admin
	// (metrics) listener only, never on the public one.
	backupPath = "/backup"
	// backupTimeout bounds one backup request from the subcommand's side: a backup
	// holds a read transaction, which keeps bbolt from reusing the pages it sees.
	backupTimeout = 10 * time.Minute
)

// subcommands are the operator's tools built into the server binary, so a backup needs
// nothing installed beside it (the container image has no shell and no curl).
var subcommands = map[string]func(args []string, getenv func(string) string) error{
	"backup":        backupCommand,
	"restore":       restoreCommand,
	"migrate-redis": migrateRedisCommand,
}

// adminRoutes is the admin listener's surface: metrics and pprof, and the backup.
func (app *App) adminRoutes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", app.metrics.handler())
	mux.HandleFunc("GET "+backupPath, app.handleBackup)
	return mux
}

// handleBackup streams a consistent copy of the data file. It answers loopback peers
// only, even if the admin listener was bound wider (to let Prometheus scrape it from
// another host): a backup is every room's history. One backup runs at a time, so a
// script looping on it cannot stack up read transactions.
func (app *App) handleBackup(w http.ResponseWriter, r *http.Request) {
	if !loopbackPeer(r.RemoteAddr) {
		app.metrics.backups.WithLabelValues("refused").Inc()
		http.Error(w, "backups are for loopback only", http.StatusForbidden)
		return
	}
	b, ok := app.store.(*store.Bolt)
	if !ok {
		app.metrics.backups.WithLabelValues("refused").Inc()
		http.Error(w, "the memory store has nothing to back up", http.StatusNotImplemented)
		return
	}
	if !app.backupBusy.CompareAndSwap(false, true) {
		app.metrics.backups.WithLabelValues("refused").Inc()
		http.Error(w, "a backup is already running", http.StatusTooManyRequests)
		return
	}
	defer app.backupBusy.Store(false)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="chat.db"`)
	start := app.now()
	n, err := b.Backup(w, func(size int64) {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	})
	if err != nil {
		// The length was announced, so the receiver sees the copy is short.
		app.metrics.backups.WithLabelValues("failed").Inc()
		app.log.Error("backup failed", "err", err, "bytes", n)
		return
	}
	app.metrics.backups.WithLabelValues("ok").Inc()
	app.log.Info("backup streamed", "bytes", n, "took", app.now().Sub(start).Round(time.Millisecond))
}

// loopbackPeer reports whether a request's direct peer is on this machine.
func loopbackPeer(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// backupCommand is `modified-chat backup [-admin-addr ADDR] FILE`: it fetches a backup
// from a running server's admin listener and writes it to FILE only once it is whole
// (written beside it, length checked, synced, checked by bbolt, then renamed), so a
// failed backup never replaces a good one.
func backupCommand(args []string, getenv func(string) string) error {
	addr, out, err := parseFileCommand(args, getenv, fileCommand{
		name: "backup", flag: "admin-addr", env: "metrics-addr", value: defaultConfig().MetricsAddr,
		help:  "the running server's admin (metrics) listener, as its -metrics-addr",
		usage: "Usage: modified-chat backup [-admin-addr ADDR] FILE\n\nWrites a consistent copy of a running server's state to FILE.\n\n",
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), backupTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+backupPath, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("server answered %s: %s", resp.Status, msg)
	}
	tmp := out + ".partial"
	if err := writeWhole(tmp, resp.Body, resp.ContentLength); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := store.CheckBolt(tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("the copy fails its check: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "backup written to %s (%d bytes)\n", out, resp.ContentLength)
	return nil
}

// writeWhole copies r to a new file at path and syncs it, failing unless exactly want
// bytes arrived (want < 0: unknown, anything goes).
func writeWhole(path string, r io.Reader, want int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, r)
	if err == nil && want >= 0 && n != want {
		err = fmt.Errorf("copy cut off: %d of %d bytes", n, want)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// restoreCommand is `modified-chat restore [-data-dir DIR] FILE`: it puts a backup into
// a data directory that is empty or missing, and refuses any other, so a restore can
// never overwrite live state. The new directory gets a fresh session key at first
// start, so every earlier session (and cookie) ends: users sign in again.
func restoreCommand(args []string, getenv func(string) string) error {
	dir, file, err := parseFileCommand(args, getenv, fileCommand{
		name: "restore", flag: "data-dir", env: "data-dir", value: defaultConfig().DataDir,
		help:  "the data directory to restore into; must be empty or missing",
		usage: "Usage: modified-chat restore [-data-dir DIR] FILE\n\nPuts a backup made by `modified-chat backup` into an empty data directory.\n\n",
	})
	if err != nil {
		return err
	}
	return restoreBackup(file, dir)
}

// fileCommand describes a subcommand that takes one string flag (whose default its
// server flag's environment twin may override) and one FILE argument.
type fileCommand struct {
	name, flag, env, value, help, usage string
}

// parseFileCommand parses a fileCommand's arguments, returning the flag's value and
// the FILE, so backup and restore read their command lines the same way.
func parseFileCommand(args []string, getenv func(string) string, spec fileCommand) (value, file string, err error) {
	fs := flag.NewFlagSet(spec.name, flag.ContinueOnError)
	value = spec.value
	if v := getenv(envName(spec.env)); v != "" {
		value = v
	}
	fs.StringVar(&value, spec.flag, value, spec.help)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), spec.usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return "", "", err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return "", "", errors.New("one FILE argument expected")
	}
	return value, fs.Arg(0), nil
}

// restoreBackup checks the backup, then copies it into dir as the data file.
func restoreBackup(backup, dir string) error {
	if err := store.CheckBolt(backup); err != nil {
		return fmt.Errorf("refusing %s: %w", backup, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("refusing to restore into %s: it is not empty (restore into a new, empty data directory)", dir)
	}
	src, err := os.Open(backup)
	if err != nil {
		return err
	}
	defer src.Close()
	dst := filepath.Join(dir, storeFileName)
	tmp := dst + ".partial"
	if err := writeWhole(tmp, src, -1); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "restored %s into %s\n", backup, dst)
	return nil
}
