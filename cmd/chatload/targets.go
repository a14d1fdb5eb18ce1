package main

// Several targets: -target takes a comma-separated list of servers (the nodes of one
// cluster behind no load balancer), and clients are spread over them round-robin,
// client i on target i mod n. Every delivery is still counted by the client that
// got it, so duplicates, reordering and the delivery ratio are measured across nodes
// exactly as on one server.

import (
	"errors"
	"fmt"
	"strings"
)

// maxTargets bounds the list: more than any loopback cluster this tool can load.
const maxTargets = 16

// parseTargets checks every target of a comma-separated list with parseTarget. All
// must be IPv4 (or localhost) or all ::1, since the clients' source addresses are
// chosen once for the run.
func parseTargets(raw string) ([]*target, error) {
	parts := strings.Split(raw, ",")
	if len(parts) > maxTargets {
		return nil, fmt.Errorf("-target: at most %d targets", maxTargets)
	}
	var out []*target
	seen := map[string]bool{}
	for _, p := range parts {
		t, err := parseTarget(strings.TrimSpace(p))
		if err != nil {
			return nil, err
		}
		if seen[t.base] {
			return nil, fmt.Errorf("-target: %s given twice", t.base)
		}
		seen[t.base] = true
		if len(out) > 0 && t.ipv6 != out[0].ipv6 {
			return nil, errors.New("-target: do not mix ::1 with IPv4 targets")
		}
		out = append(out, t)
	}
	return out, nil
}

// targetFor is the target of client i.
func (r *runner) targetFor(i int) *target { return r.targets[i%len(r.targets)] }

// targetList is the report's name for the targets: their bases, comma-separated.
func targetList(ts []*target) string {
	bases := make([]string, len(ts))
	for i, t := range ts {
		bases[i] = t.base
	}
	return strings.Join(bases, ",")
}
