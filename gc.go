package main

import (
	"runtime/debug"
	"strconv"
	"strings"
)

// defaultGCPercent is the garbage collector's target this server runs with when the
// operator has not chosen one. Go's own default (GOGC=100) lets the heap grow to twice
// what is live before it collects. A chat server's live heap is mostly idle
// connections, and the garbage of their logins lingers until the next cycle, so at
// 10,000 idle connections that headroom is about a fifth of the resident memory (make
// bench W3: 18.8–19.9 kB a connection at 100, 16.0–16.6 kB at 50). The price is more
// frequent cycles while traffic flows; README's results give it for W1 and W2.
const defaultGCPercent = 50

// applyGCDefault sets the collector's target to defaultGCPercent unless the GOGC
// environment variable is set, in which case the runtime has already read it and it
// stands (GOGC=off included). It returns the target in force and whether it came from
// the environment, for the start-up log.
func applyGCDefault(getenv func(string) string) (percent string, fromEnv bool) {
	if v := strings.TrimSpace(getenv("GOGC")); v != "" {
		return v, true
	}
	debug.SetGCPercent(defaultGCPercent)
	return strconv.Itoa(defaultGCPercent), false
}
