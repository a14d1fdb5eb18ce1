// Package crash ends the process when a goroutine it cannot do without panics.
//
// Some goroutines own state nothing else can rebuild while the process runs: the store
// writer (its queued requests wait for acks only it sends) and the cluster feeds (the
// order, replay filter and positions of every room). After a panic in one of them the
// process would run on with a part dead: messages accepted and never acknowledged, rooms
// that silently stop moving. Restarting the loop in place is not safe either, since
// the panic may have left that state half changed. The careful course is to log the
// panic and exit non-zero, so the supervisor (systemd, the container runtime) starts a
// fresh process that rebuilds its state from the disk and from Redis.
package crash

import (
	"log/slog"
	"os"
	"runtime/debug"
)

// ExitCode is the status the process exits with after such a panic: EX_SOFTWARE
// (sysexits.h, "internal software error"), distinct from the 1 of a failed start or
// the 2 of bad configuration, so an operator can tell a bug from a misconfiguration.
const ExitCode = 70

// TestHook, when set (tests only; nil in production), is called by each guarded
// goroutine once as it starts, with its name, before its loop: a test makes it panic to
// see the guard work. It is never called per message.
var TestHook func(goroutine string)

// exit is os.Exit; a variable only so the package's own test can watch it.
var exit = os.Exit

// Hook runs TestHook for goroutine if a test has set it.
func Hook(goroutine string) {
	if TestHook != nil {
		TestHook(goroutine)
	}
}

// OnPanic, deferred first thing in a guarded goroutine, turns a panic into a log line
// with the stack and the panic's value as Value gives it (never the values the
// goroutine held, which may be message text) and
// an exit with ExitCode. log may be nil (slog's default). Without a panic it does nothing.
func OnPanic(log *slog.Logger, goroutine string) {
	v := recover()
	if v == nil {
		return
	}
	if log == nil {
		log = slog.Default()
	}
	kind, text := Value(v)
	log.Error("goroutine panicked; exiting for the supervisor to restart", "goroutine", goroutine, "panic_type", kind, "panic", text, "stack", string(debug.Stack()), "exit", ExitCode)
	exit(ExitCode)
}
