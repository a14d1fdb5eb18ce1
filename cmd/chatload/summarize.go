package main

// -summarize: read the JSON reports of a benchmark and print, per workload,
// the median of each side and the modified/original ratio. It lives in the
// tool so that the benchmark script needs nothing beyond Go.

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
)

// metric is one table row: how to read it from a report and whether it
// applies to idle or to load runs.
type metric struct {
	name string
	get  func(*Report) (float64, bool)
	idle bool // shown for idle workloads (else for load workloads)
	both bool // shown for both kinds
}

// serverVal reads a server field, absent when the run had no -pid.
func serverVal(f func(*ServerStats) float64) func(*Report) (float64, bool) {
	return func(r *Report) (float64, bool) {
		if r.Server == nil {
			return 0, false
		}
		return f(r.Server), true
	}
}

// perDelivery turns CPU seconds over the send phase into microseconds per delivery;
// a report with no deliveries has no figure.
func perDelivery(f func(*Report) (float64, bool)) func(*Report) (float64, bool) {
	return func(r *Report) (float64, bool) {
		v, ok := f(r)
		if !ok || r.Delivered == 0 {
			return 0, false
		}
		return v * 1e6 / float64(r.Delivered), true
	}
}

// always wraps a field that every report has.
func always(f func(*Report) float64) func(*Report) (float64, bool) {
	return func(r *Report) (float64, bool) { return f(r), true }
}

// summaryMetrics are the rows of the table, in order.
var summaryMetrics = []metric{
	{name: "connected", get: always(func(r *Report) float64 { return float64(r.Connected) }), both: true},
	{name: "delivery ratio", get: always(func(r *Report) float64 { return r.DeliveryRatio })},
	{name: "deliveries/s", get: always(func(r *Report) float64 { return r.DeliveriesPerS })},
	{name: "latency p50 ms", get: always(func(r *Report) float64 { return r.Latency.P50 })},
	{name: "latency p99 ms", get: always(func(r *Report) float64 { return r.Latency.P99 })},
	{name: "dropped conns", get: always(func(r *Report) float64 { return float64(r.Dropped) }), both: true},
	{name: "rss/conn kB", get: serverVal(func(s *ServerStats) float64 { return s.RSSPerConnKB }), idle: true},
	{name: "server cpu s", get: serverVal(func(s *ServerStats) float64 { return s.CPUSeconds }), both: true},
	{name: "server cpu µs/deliv", get: perDelivery(func(r *Report) (float64, bool) {
		if r.Server == nil {
			return 0, false
		}
		return r.Server.CPUSendSeconds, true
	})},
	{name: "chatload cpu µs/deliv", get: perDelivery(func(r *Report) (float64, bool) { return r.LoadCPUSendS, r.LoadCPUSendS > 0 })},
	{name: "server rss peak MB", get: serverVal(func(s *ServerStats) float64 { return float64(s.RSSPeakKB) / 1024 }), both: true},
}

// summarizeFiles reads report files and writes the comparison table.
func summarizeFiles(paths []string, w io.Writer) error {
	var reps []*Report
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var r Report
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		reps = append(reps, &r)
	}
	return Summarize(reps, w)
}

// sideSigned is the side of -sign runs of the modified server in the table.
const sideSigned = "signed"

// sideOf is the table column a report belongs to: its protocol, or signed.
func sideOf(r *Report) string {
	if r.Signed {
		return sideSigned
	}
	return r.Proto
}

// Summarize groups reports by tag (the workload) and side (the protocol, or
// signed for -sign runs) and prints the medians with the ratio of the two sides:
// modified/original, or signed/modified when the reports hold signed runs
// (BENCH_SIGN=1). Workloads keep the order in which they first appear.
func Summarize(reps []*Report, w io.Writer) error {
	if len(reps) == 0 {
		return fmt.Errorf("no reports to summarize")
	}
	var order []string
	groups := map[string]map[string][]*Report{}
	for _, r := range reps {
		tag := r.Tag
		if tag == "" {
			tag = "(untagged)"
		}
		if groups[tag] == nil {
			groups[tag] = map[string][]*Report{}
			order = append(order, tag)
		}
		groups[tag][sideOf(r)] = append(groups[tag][sideOf(r)], r)
	}
	left, right, ratioName := protoOriginal, protoModified, "mod/orig"
	for _, r := range reps {
		if r.Signed {
			left, right, ratioName = protoModified, sideSigned, "sig/mod"
		}
	}
	fmt.Fprintf(w, "%-6s %-20s %14s %14s %10s %16s %16s %18s\n", "work", "metric (median)", left, right, ratioName,
		left+" range", right+" range", "paired (range)")
	for _, tag := range order {
		g := groups[tag]
		idle := false
		for _, rs := range g {
			idle = idle || rs[0].Idle
		}
		fmt.Fprintf(w, "%-6s %s\n", tag, describe(g, left, right))
		for _, m := range summaryMetrics {
			if !m.both && m.idle != idle {
				continue
			}
			o, okO := medianOf(g[left], m.get)
			n, okN := medianOf(g[right], m.get)
			if !okO && !okN {
				continue
			}
			ratio := "-"
			if okO && okN && o != 0 {
				ratio = fmt.Sprintf("%.2f", n/o)
			}
			fmt.Fprintf(w, "%-6s %-20s %14s %14s %10s %16s %16s %18s\n", "", m.name, fmtNum(o, okO), fmtNum(n, okN), ratio,
				spreadOf(g[left], m.get), spreadOf(g[right], m.get), pairedRatio(g[left], g[right], m.get))
		}
	}
	return nil
}

// describe states a workload's shape from its first report, with the
// number of rounds per side (the table's two columns), so the table says what
// was measured.
func describe(g map[string][]*Report, left, right string) string {
	var r *Report
	for _, p := range []string{left, right} {
		if len(g[p]) > 0 {
			r = g[p][0]
			break
		}
	}
	if r == nil {
		for _, rs := range g {
			r = rs[0]
		}
	}
	rounds := fmt.Sprintf("rounds %d/%d", len(g[left]), len(g[right]))
	if r.Idle {
		return fmt.Sprintf("(%d idle connections; %s)", r.Clients, rounds)
	}
	return fmt.Sprintf("(%d clients, %d senders x %.3g msg/s, %d B, %.0fs; %s)",
		r.Clients, r.Senders, r.Rate, r.Size, r.DurationS, rounds)
}

// medianOf is the median of one metric over a side's rounds.
func medianOf(rs []*Report, get func(*Report) (float64, bool)) (float64, bool) {
	var vals []float64
	for _, r := range rs {
		if v, ok := get(r); ok {
			vals = append(vals, v)
		}
	}
	if len(vals) == 0 {
		return 0, false
	}
	return Median(vals), true
}

// spreadOf is the lowest and highest value of one metric over a side's rounds, "-"
// when no round has it, so a table shows how far the rounds apart the median lies.
func spreadOf(rs []*Report, get func(*Report) (float64, bool)) string {
	lo, hi, ok := math.Inf(1), math.Inf(-1), false
	for _, r := range rs {
		if v, has := get(r); has {
			lo, hi, ok = math.Min(lo, v), math.Max(hi, v), true
		}
	}
	if !ok {
		return "-"
	}
	return fmtNum(lo, true) + ".." + fmtNum(hi, true)
}

// pairedRatio is the median, with its range, of the per-round ratios right/left,
// pairing the k-th round of one side with the k-th of the other. bench.sh runs the
// sides alternately (A B A B ...), so each pair ran minutes apart on the same machine:
// a slow spell of the machine then moves both halves of a pair, which the ratio of the
// two sides' medians does not cancel. "-" when no pair has the figure on both sides.
func pairedRatio(left, right []*Report, get func(*Report) (float64, bool)) string {
	var ratios []float64
	for k := 0; k < len(left) && k < len(right); k++ {
		o, okO := get(left[k])
		n, okN := get(right[k])
		if okO && okN && o != 0 {
			ratios = append(ratios, n/o)
		}
	}
	if len(ratios) == 0 {
		return "-"
	}
	lo, hi := slices.Min(ratios), slices.Max(ratios)
	return fmt.Sprintf("%.2f (%.2f..%.2f)", Median(ratios), lo, hi)
}

// fmtNum prints a table cell with sensible precision for its size.
func fmtNum(v float64, ok bool) string {
	switch {
	case !ok:
		return "-"
	case v == math.Trunc(v) || math.Abs(v) >= 1000:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}
