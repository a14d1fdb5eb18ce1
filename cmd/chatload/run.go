package main

// The run itself: connect phase, send phase, settle phase, measurement and
// the assembly of the report.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Bounds on the run's own machinery.
const (
	maxInflightHandshakes = 256
	samplePeriod          = 100 * time.Millisecond
	settlePoll            = 20 * time.Millisecond
	closeWait             = 10 * time.Second
)

// runner holds one run's shared state.
type runner struct {
	cfg       Config
	targets   []*target
	modified  bool
	log       io.Writer
	latShards [8]latShard

	mu      sync.Mutex
	refused map[string]int
	conns   []*loadConn // connected and in the room, by client index order
}

// refuse counts a connection that did not make it, by reason.
func (r *runner) refuse(reason string) {
	r.mu.Lock()
	r.refused[reason]++
	r.mu.Unlock()
}

// logf writes progress lines to the log writer (stderr in the CLI) so that
// stdout holds only the report.
func (r *runner) logf(format string, args ...any) {
	if r.log != nil {
		fmt.Fprintf(r.log, "chatload: "+format+"\n", args...)
	}
}

// Run executes one load run as cfg describes and returns its report. It is
// the whole tool minus flag parsing, so tests drive it directly.
func Run(ctx context.Context, cfg Config, logw io.Writer) (*Report, error) {
	if cfg.SrcAddrs == 0 {
		cfg.SrcAddrs = defaultSrcAddrs(cfg.Clients)
	}
	if cfg.Idle {
		cfg.Senders = 0
	}
	ts, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, targets: ts, modified: cfg.Proto == protoModified, log: logw, refused: map[string]int{}}

	rep := &Report{
		Tag: cfg.Tag, Proto: cfg.Proto, Target: targetList(ts), Clients: cfg.Clients, Senders: cfg.Senders,
		Rate: cfg.Rate, Size: cfg.Size, DurationS: cfg.Duration.Seconds(), Room: cfg.Room,
		Idle: cfg.Idle, ConnectRate: cfg.ConnectRate,
	}

	// Server resource sampling runs across the whole run for the peak.
	var sampler *procSampler
	if cfg.Pid > 0 {
		sampler, err = startSampler(cfg.Pid)
		if err != nil {
			return nil, fmt.Errorf("-pid %d: %w", cfg.Pid, err)
		}
		defer sampler.stop()
	}

	srcs := sourceAddrs(cfg.SrcAddrs, ts[0].ipv6)
	rep.SrcAddrs = len(srcs)
	pool := &sync.Pool{}
	eps := make([]*endpoint, len(srcs))
	for i, ip := range srcs {
		eps[i] = newEndpoint(ip, pool)
	}

	// Connect phase.
	connStart := time.Now()
	r.connectAll(ctx, eps)
	rep.ConnectS = time.Since(connStart).Seconds()
	conns := r.conns
	rep.Connected = len(conns)
	rep.Refused = r.refused
	r.logf("connected %d/%d in %.1fs, refused %v", len(conns), cfg.Clients, rep.ConnectS, r.refused)

	// chatload's own CPU is read too: it shares the machine with the server, and
	// its cost per delivery differs between the two protocols (JSON against text).
	selfStart, selfErr := ownCPU()
	var cpuSendStart uint64
	if sampler != nil {
		if s, err := readProc(cfg.Pid); err == nil {
			cpuSendStart = s.CPUTicks
		}
	}

	// Send phase: the first Senders connected clients send.
	senders := cfg.Senders
	if senders > len(conns) {
		senders = len(conns)
	}
	rep.Senders = senders
	rep.Signed = cfg.Sign
	if cfg.Sign && !cfg.Idle && ctx.Err() == nil {
		if err := r.registerSenders(ctx, conns[:senders]); err != nil {
			r.closeAll(conns)
			return nil, err
		}
	}
	sendStart := time.Now()
	var sent int64
	if !cfg.Idle && senders > 0 && ctx.Err() == nil {
		interval := time.Duration(float64(time.Second) / cfg.Rate)
		sctx, cancel := context.WithTimeout(ctx, cfg.Duration)
		var wg sync.WaitGroup
		for s := 0; s < senders; s++ {
			c := conns[s]
			start := sendStart.Add(interval * time.Duration(s) / time.Duration(senders))
			wg.Add(1)
			go func(s int) {
				defer wg.Done()
				c.sendLoop(sctx, s, start, interval)
			}(s)
		}
		wg.Wait()
		cancel()
		for s := 0; s < senders; s++ {
			sent += conns[s].sent
			if conns[s].sendErr != nil {
				rep.SendErrors++
			}
		}
	}
	sendEnd := time.Now()
	rep.SendS = sendEnd.Sub(sendStart).Seconds()
	rep.Sent = sent
	rep.Expected = Expected(sent, len(conns))

	// Settle: wait for in-flight deliveries, ending early once everything
	// expected has arrived (or every connection is gone).
	lastDelivery := r.settle(ctx, conns, rep.Expected)
	rep.SettleS = time.Since(sendEnd).Seconds()

	if self, err := ownCPU(); err == nil && selfErr == nil && self >= selfStart {
		rep.LoadCPUSendS = (self - selfStart).Seconds()
	}

	// Measure the server before closing anything.
	var after ProcSample
	if sampler != nil {
		after, err = readProc(cfg.Pid)
		if err != nil {
			r.logf("reading server stats after the run: %v", err)
		}
	}

	// Connections the server closed while we still wanted them.
	dropped := make([]bool, len(conns))
	for i, c := range conns {
		select {
		case <-c.done:
			dropped[i] = true
			rep.Dropped++
		default:
		}
	}

	r.closeAll(conns)

	// Sum the accounting (all read loops have ended).
	r.fillDeliveries(rep, conns, sendStart, sendEnd, lastDelivery)
	recordDrops(rep, conns, dropped)

	if sampler != nil {
		sampler.stop()
		rep.Server = sampler.report(after, cpuSendStart, len(conns), cfg.Idle)
	}
	return rep, nil
}

// connectAll opens every client at no more than ConnectRate per second and
// with a bounded number of handshakes in flight, and waits until each has
// joined the room or failed. Client i dials from source address i mod K, so
// consecutive connections rotate over the addresses.
func (r *runner) connectAll(ctx context.Context, eps []*endpoint) {
	cfg := r.cfg
	cookies := parseCookieFlag(cfg.Cookie)
	sem := make(chan struct{}, maxInflightHandshakes)
	slots := make([]*loadConn, cfg.Clients)
	var wg sync.WaitGroup
	t0 := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
pace:
	for i := 0; i < cfg.Clients; i++ {
		due := t0.Add(time.Duration(float64(i) / cfg.ConnectRate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break pace
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break pace
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			slots[i] = r.connectOne(ctx, i, eps[i%len(eps)], cookies)
		}(i)
	}
	wg.Wait()
	for _, c := range slots {
		if c != nil {
			r.conns = append(r.conns, c)
		}
	}
}

// connectOne logs in (unless a cookie was given), dials, and waits for the
// room; it returns nil after counting the reason when any step fails.
func (r *runner) connectOne(ctx context.Context, i int, ep *endpoint, cookies []*http.Cookie) *loadConn {
	if r.modified && cookies == nil {
		lctx, cancel := context.WithTimeout(ctx, loginTimeout)
		var reason string
		cookies, reason = login(lctx, ep, r.targetFor(i), clientName(i))
		cancel()
		if reason != "" {
			r.refuse(reason)
			return nil
		}
	}
	dctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	ws, reason := dial(dctx, ep, r.targetFor(i), cookies)
	cancel()
	if reason != "" {
		r.refuse(reason)
		return nil
	}
	c := &loadConn{
		idx: i, r: r, ws: ws,
		ready:  make(chan struct{}),
		done:   make(chan struct{}),
		tally:  NewTally(r.cfg.Senders),
		events: map[string]int64{},
		errs:   map[string]int64{},
	}
	// Every client gets its keys (two key generations, cheap) before its read loop
	// starts, so the loop never sees c.sig change; only the senders register them.
	if r.cfg.Sign {
		var err error
		if c.sig, err = newSigner(devUserPrefix + clientName(i)); err != nil {
			r.refuse("sign:keys")
			_ = ws.Close()
			return nil
		}
	}
	go c.readLoop()
	if r.modified && r.cfg.Room != "lobby" {
		msg := []byte(`{"type":"join","room":"` + r.cfg.Room + `"}`)
		_ = ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := ws.WriteMessage(websocket.TextMessage, msg); err != nil {
			r.refuse("join:" + classifyErr(err))
			_ = ws.Close()
			return nil
		}
	}
	jt := time.NewTimer(joinTimeout)
	defer jt.Stop()
	select {
	case <-c.ready:
		return c
	case <-c.done:
		r.refuse("join:" + closeReason(c.endErr))
	case <-jt.C:
		r.refuse("join:timeout")
	case <-ctx.Done():
		r.refuse("join:canceled")
	}
	_ = ws.Close()
	<-c.done
	return nil
}

// settle waits up to Settle for deliveries to reach expected and returns the
// time the last delivery count change was seen (the end of useful work).
func (r *runner) settle(ctx context.Context, conns []*loadConn, expected int64) time.Time {
	deadline := time.NewTimer(r.cfg.Settle)
	defer deadline.Stop()
	tk := time.NewTicker(settlePoll)
	defer tk.Stop()
	last := time.Now()
	var prev int64 = -1
	for {
		var got int64
		open := 0
		for _, c := range conns {
			got += c.live.Load()
			select {
			case <-c.done:
			default:
				open++
			}
		}
		if got != prev {
			prev = got
			last = time.Now()
		}
		if !r.cfg.Idle && (got >= expected || open == 0) {
			return last
		}
		select {
		case <-tk.C:
		case <-deadline.C:
			return last
		case <-ctx.Done():
			return last
		}
	}
}

// closeAll closes every connection and waits (bounded) for their read loops.
func (r *runner) closeAll(conns []*loadConn) {
	for _, c := range conns {
		c.closeConn()
	}
	deadline := time.NewTimer(closeWait)
	defer deadline.Stop()
	for _, c := range conns {
		select {
		case <-c.done:
		case <-deadline.C:
			r.logf("some read loops did not finish within %s", closeWait)
			return
		}
	}
}

// fillDeliveries sums every connection's accounting into the report.
func (r *runner) fillDeliveries(rep *Report, conns []*loadConn, sendStart, sendEnd, lastDelivery time.Time) {
	total := NewTally(r.cfg.Senders)
	rep.Errors = map[string]int64{}
	rep.Events = map[string]int64{}
	rep.CloseReasons = map[string]int{}
	for _, c := range conns {
		select {
		case <-c.done:
		default:
			continue // read loop still running: its counters are not safe to read
		}
		total.Add(c.tally)
		rep.Acked += c.acks
		for k, v := range c.errs {
			rep.Errors[k] += v
		}
		for k, v := range c.events {
			rep.Events[k] += v
		}
	}
	rep.Delivered = total.Delivered
	rep.Duplicates = total.Dups
	rep.Reordered = total.Reordered
	rep.Foreign = total.Foreign
	rep.DeliveryRatio = Ratio(float64(rep.Delivered), float64(rep.Expected))
	window := sendEnd.Sub(sendStart)
	if lastDelivery.After(sendEnd) {
		window = lastDelivery.Sub(sendStart)
	}
	rep.DeliveriesPerS = Ratio(float64(rep.Delivered), window.Seconds())

	var h Histogram
	for i := range r.latShards {
		h.Merge(&r.latShards[i].h)
	}
	rep.Latency = LatencyMs{
		P50: nsToMs(h.Quantile(0.50)),
		P90: nsToMs(h.Quantile(0.90)),
		P99: nsToMs(h.Quantile(0.99)),
		Max: nsToMs(h.Max()),
	}
}

// recordDrops counts why connections ended early, keyed by close code or
// error class.
func recordDrops(rep *Report, conns []*loadConn, dropped []bool) {
	for i, c := range conns {
		if dropped[i] {
			rep.CloseReasons[closeReason(c.endErr)]++
		}
	}
}

// nsToMs converts nanoseconds to milliseconds for the report.
func nsToMs(ns int64) float64 { return float64(ns) / 1e6 }

// sortedKeys lists a map's keys in order, for stable human output.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ownCPU is the user and system CPU time this process has used so far, to the
// microsecond (getrusage), fine enough for a short run.
func ownCPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
