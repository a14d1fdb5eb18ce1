package main

// The report of one run, its human rendering, and the server sampler that
// feeds its server section.

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Report is what one run measured. Its JSON form is what scripts/bench.sh
// stores and `chatload -summarize` reads back.
type Report struct {
	Tag         string  `json:"tag,omitempty"`
	Proto       string  `json:"proto"`
	Signed      bool    `json:"signed,omitempty"` // -sign: every say carried a signature
	Target      string  `json:"target"`
	Clients     int     `json:"clients"`
	Senders     int     `json:"senders"`
	Rate        float64 `json:"rate"`
	Size        int     `json:"size"`
	DurationS   float64 `json:"duration_s"`
	Room        string  `json:"room"`
	Idle        bool    `json:"idle"`
	SrcAddrs    int     `json:"src_addrs"`
	ConnectRate float64 `json:"connect_rate"`

	Connected    int            `json:"connected"`
	Refused      map[string]int `json:"refused"`
	Dropped      int            `json:"dropped"`
	CloseReasons map[string]int `json:"close_reasons"`
	SendErrors   int            `json:"send_errors"`

	ConnectS float64 `json:"connect_s"`
	SendS    float64 `json:"send_s"`
	SettleS  float64 `json:"settle_s"`

	Sent           int64     `json:"sent"`
	Acked          int64     `json:"acked"`
	Delivered      int64     `json:"delivered"`
	Expected       int64     `json:"expected"`
	DeliveryRatio  float64   `json:"delivery_ratio"`
	DeliveriesPerS float64   `json:"deliveries_per_s"`
	Latency        LatencyMs `json:"latency_ms"`
	Duplicates     int64     `json:"duplicates"`
	Reordered      int64     `json:"reordered"`
	Foreign        int64     `json:"foreign"`

	Errors map[string]int64 `json:"errors"`
	Events map[string]int64 `json:"events"`

	// LoadCPUSendS is chatload's own CPU time over send and settle, seconds.
	LoadCPUSendS float64 `json:"load_cpu_send_s"`

	Server *ServerStats `json:"server,omitempty"`
}

// LatencyMs holds delivery latency percentiles in milliseconds.
type LatencyMs struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// ServerStats is what the run cost the server process.
type ServerStats struct {
	Pid            int     `json:"pid"`
	CPUSeconds     float64 `json:"cpu_s"`      // whole run: connect + send + settle
	CPUSendSeconds float64 `json:"cpu_send_s"` // send + settle only
	RSSBeforeKB    int64   `json:"rss_before_kb"`
	RSSAfterKB     int64   `json:"rss_after_kb"`
	RSSPeakKB      int64   `json:"rss_peak_kb"`
	RSSPerConnKB   float64 `json:"rss_per_conn_kb"` // (after - before) / connections
}

// procSampler polls the server's /proc entries during a run to catch the
// peak RSS, which a before/after pair would miss.
type procSampler struct {
	pid    int
	before ProcSample
	mu     sync.Mutex
	peak   int64
	quit   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// startSampler takes the "before" reading and starts polling.
func startSampler(pid int) (*procSampler, error) {
	b, err := readProc(pid)
	if err != nil {
		return nil, err
	}
	s := &procSampler{pid: pid, before: b, peak: b.RSSKB, quit: make(chan struct{}), done: make(chan struct{})}
	go s.loop()
	return s, nil
}

// loop samples until stopped; a vanished process just ends sampling.
func (s *procSampler) loop() {
	defer close(s.done)
	tk := time.NewTicker(samplePeriod)
	defer tk.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-tk.C:
		}
		v, err := readProc(s.pid)
		if err != nil {
			return
		}
		s.mu.Lock()
		if v.RSSKB > s.peak {
			s.peak = v.RSSKB
		}
		s.mu.Unlock()
	}
}

// stop ends the polling; safe to call more than once.
func (s *procSampler) stop() {
	s.once.Do(func() { close(s.quit) })
	<-s.done
}

// report turns the before, after and peak readings into ServerStats.
// RSS per connection is only meaningful for idle runs, where nothing but
// the connections themselves grew the process.
func (s *procSampler) report(after ProcSample, cpuSendStart uint64, conns int, idle bool) *ServerStats {
	s.mu.Lock()
	peak := s.peak
	s.mu.Unlock()
	if after.RSSKB > peak {
		peak = after.RSSKB
	}
	st := &ServerStats{
		Pid:         s.pid,
		RSSBeforeKB: s.before.RSSKB,
		RSSAfterKB:  after.RSSKB,
		RSSPeakKB:   peak,
	}
	if after.CPUTicks >= s.before.CPUTicks {
		st.CPUSeconds = ticksToSeconds(after.CPUTicks - s.before.CPUTicks)
	}
	if cpuSendStart > 0 && after.CPUTicks >= cpuSendStart {
		st.CPUSendSeconds = ticksToSeconds(after.CPUTicks - cpuSendStart)
	}
	if idle && conns > 0 {
		st.RSSPerConnKB = float64(after.RSSKB-s.before.RSSKB) / float64(conns)
	}
	return st
}

// WriteText prints the report for a person.
func (r *Report) WriteText(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	mode := "load"
	if r.Idle {
		mode = "idle"
	}
	p("chatload %s run against %s (%s protocol)%s", mode, r.Target, r.Proto, tagSuffix(r.Tag))
	p("  clients %d from %d source addresses, connect rate %.0f/s", r.Clients, r.SrcAddrs, r.ConnectRate)
	p("  connected %d in %.1fs; refused %s", r.Connected, r.ConnectS, fmtCounts(r.Refused))
	if !r.Idle {
		p("  senders %d x %.3g msg/s, %d-byte texts, sending %.1fs, settle %.1fs", r.Senders, r.Rate, r.Size, r.SendS, r.SettleS)
		p("  sent %d (acked %d, send errors %d)", r.Sent, r.Acked, r.SendErrors)
		p("  delivered %d of %d expected: ratio %.4f, %.0f deliveries/s", r.Delivered, r.Expected, r.DeliveryRatio, r.DeliveriesPerS)
		p("  latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f", r.Latency.P50, r.Latency.P90, r.Latency.P99, r.Latency.Max)
		p("  duplicates %d, reordered %d, foreign %d", r.Duplicates, r.Reordered, r.Foreign)
	}
	p("  dropped by server %d: %s", r.Dropped, fmtCounts(r.CloseReasons))
	p("  errors by code: %s", fmtCounts(r.Errors))
	p("  other events: %s", fmtCounts(r.Events))
	if s := r.Server; s != nil {
		p("  server pid %d: cpu %.2fs (send+settle %.2fs); rss kB before %d after %d peak %d",
			s.Pid, s.CPUSeconds, s.CPUSendSeconds, s.RSSBeforeKB, s.RSSAfterKB, s.RSSPeakKB)
		if r.Idle {
			p("  rss per connection: %.2f kB", s.RSSPerConnKB)
		}
	}
}

// tagSuffix shows the tag when there is one.
func tagSuffix(tag string) string {
	if tag == "" {
		return ""
	}
	return " [" + tag + "]"
}

// fmtCounts renders a count map as "a=1 b=2" in key order, or "none".
func fmtCounts[V int | int64](m map[string]V) string {
	if len(m) == 0 {
		return "none"
	}
	out := ""
	for i, k := range sortedKeys(m) {
		if i > 0 {
			out += " "
		}
		out += fmt.Sprintf("%s=%d", k, m[k])
	}
	return out
}
