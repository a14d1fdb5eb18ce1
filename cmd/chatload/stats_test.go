package main

import (
	"bytes"
	"math"
	"math/rand"
	"strings"
	"testing"
)

// TestPayloadRoundTrip checks that what a sender encodes a receiver reads
// back, at the requested size, including when the header alone is longer.
func TestPayloadRoundTrip(t *testing.T) {
	cases := []struct {
		sender, seq int
		at          int64
		size        int
	}{
		{0, 0, 1, 64},
		{17, 123456, 1732480000123456789, 64},
		{3, 9, 42, 0},  // header longer than size: no padding
		{1, 2, 3, 500}, // large padding
	}
	for _, c := range cases {
		b := EncodePayload(nil, c.sender, c.seq, c.at, c.size)
		if len(b) < c.size {
			t.Errorf("size: got %d bytes, want at least %d", len(b), c.size)
		}
		if c.size > 40 && len(b) != c.size {
			t.Errorf("size: got %d bytes, want exactly %d", len(b), c.size)
		}
		s, q, at, ok := ParsePayload(b)
		if !ok || s != c.sender || q != c.seq || at != c.at {
			t.Errorf("parse %q = %d %d %d %v, want %d %d %d", b, s, q, at, ok, c.sender, c.seq, c.at)
		}
	}
	// Appending keeps what was in dst.
	b := EncodePayload([]byte("prefix"), 1, 2, 3, 20)
	if !bytes.HasPrefix(b, []byte("prefixL|1|2|3|")) || len(b) != 26 {
		t.Errorf("append: got %q", b)
	}
}

// TestParsePayloadRejects makes sure foreign or damaged texts are not
// misread as load messages.
func TestParsePayloadRejects(t *testing.T) {
	for _, s := range []string{
		"", "L", "L|", "hello", "X|1|2|3|", "L|1|2|3", "L|a|2|3|", "L|1||3|",
		"L|-1|2|3|", "L|99999999999|2|3|", "L|1|2|99999999999999999999|",
	} {
		if _, _, _, ok := ParsePayload([]byte(s)); ok {
			t.Errorf("ParsePayload(%q) accepted", s)
		}
	}
}

// TestHistogramQuantilesMatchExact compares the histogram with exact
// nearest-rank quantiles on skewed random data: the histogram may only
// overstate, and by at most one bucket (1/64 relative).
func TestHistogramQuantilesMatchExact(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	var h Histogram
	vals := make([]int64, 20000)
	for i := range vals {
		// Log-uniform from 1 µs to ~10 s, in nanoseconds.
		v := int64(math.Exp(rng.Float64()*math.Log(1e7)) * 1e3)
		vals[i] = v
		h.Record(v)
	}
	for _, q := range []float64{0, 0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		exact := ExactQuantile(vals, q)
		got := h.Quantile(q)
		if got < exact || float64(got-exact) > float64(exact)/64+1 {
			t.Errorf("q=%v: histogram %d, exact %d", q, got, exact)
		}
	}
	if h.Count() != uint64(len(vals)) {
		t.Errorf("count %d", h.Count())
	}
	if h.Max() != ExactQuantile(vals, 1) || h.Min() != ExactQuantile(vals, 0) {
		t.Errorf("min/max %d/%d", h.Min(), h.Max())
	}
}

// TestHistogramSmallValuesExact checks the exact region and the simple
// textbook cases of nearest rank.
func TestHistogramSmallValuesExact(t *testing.T) {
	var h Histogram
	for v := int64(1); v <= 10; v++ {
		h.Record(v)
	}
	want := map[float64]int64{0.1: 1, 0.5: 5, 0.9: 9, 0.95: 10, 1: 10}
	for q, w := range want {
		if got := h.Quantile(q); got != w {
			t.Errorf("q=%v: got %d want %d", q, got, w)
		}
	}
	var empty Histogram
	if empty.Quantile(0.5) != 0 || empty.Max() != 0 {
		t.Error("empty histogram should answer 0")
	}
}

// TestHistogramClampAndBuckets checks the edges: negatives and huge values
// are clamped into range, and bucket edges are consistent with the index.
func TestHistogramClampAndBuckets(t *testing.T) {
	var h Histogram
	h.Record(-5)
	h.Record(math.MaxInt64)
	if h.Min() != 0 || h.Max() != histMaxValue {
		t.Errorf("clamp: min %d max %d", h.Min(), h.Max())
	}
	for _, v := range []int64{0, 1, 63, 64, 65, 127, 128, 1000, 123456789, histMaxValue} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("index %d out of range for %d", i, v)
		}
		if u := histUpper(i); u < v || (i > 0 && histUpper(i-1) >= v) {
			t.Errorf("value %d: bucket %d upper %d, previous upper %d", v, i, u, histUpper(i-1))
		}
	}
}

// TestHistogramMerge checks that merging shards equals recording into one.
func TestHistogramMerge(t *testing.T) {
	var a, b, all Histogram
	for i := int64(0); i < 1000; i++ {
		v := i * i * 37
		all.Record(v)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	var m Histogram
	m.Merge(&a)
	m.Merge(&b)
	m.Merge(&Histogram{})
	for _, q := range []float64{0.5, 0.9, 0.99} {
		if m.Quantile(q) != all.Quantile(q) {
			t.Errorf("q=%v: merged %d, single %d", q, m.Quantile(q), all.Quantile(q))
		}
	}
	if m.Count() != all.Count() || m.Min() != all.Min() || m.Max() != all.Max() {
		t.Error("merged count/min/max differ")
	}
}

// TestSeqTracker covers in-order, duplicate, reordered and sparse arrivals.
func TestSeqTracker(t *testing.T) {
	var s SeqTracker
	steps := []struct {
		seq        int
		dup, reord bool
	}{
		{0, false, false},
		{1, false, false},
		{1, true, false}, // duplicate
		{3, false, false},
		{2, false, true}, // late
		{2, true, false}, // late and duplicate: only a duplicate
		{1000, false, false},
		{999, false, true},
		{0, true, false},
	}
	for i, st := range steps {
		d, r := s.Observe(st.seq)
		if d != st.dup || r != st.reord {
			t.Errorf("step %d seq %d: dup %v reord %v, want %v %v", i, st.seq, d, r, st.dup, st.reord)
		}
	}
}

// TestTally checks the per-receiver counting and the sum of receivers.
func TestTally(t *testing.T) {
	a := NewTally(2)
	fresh := 0
	for _, m := range [][2]int{{0, 0}, {1, 0}, {0, 1}, {0, 1}, {1, 2}, {1, 1}, {2, 0}, {-1, 0}} {
		if a.Observe(m[0], m[1]) {
			fresh++
		}
	}
	if a.Delivered != 5 || fresh != 5 || a.Dups != 1 || a.Reordered != 1 || a.Foreign != 2 {
		t.Errorf("tally %+v fresh %d", *a, fresh)
	}
	b := NewTally(2)
	b.Observe(0, 0)
	total := NewTally(2)
	total.Add(a)
	total.Add(b)
	if total.Delivered != 6 || total.Dups != 1 || total.Reordered != 1 || total.Foreign != 2 {
		t.Errorf("sum %+v", *total)
	}
}

// TestExpectedRatioMedian checks the small arithmetic helpers.
func TestExpectedRatioMedian(t *testing.T) {
	if Expected(10, 5) != 50 || Expected(0, 5) != 0 || Expected(10, 0) != 0 {
		t.Error("Expected")
	}
	if Ratio(1, 0) != 0 || Ratio(3, 4) != 0.75 {
		t.Error("Ratio")
	}
	if Median([]float64{3, 1, 2}) != 2 || Median([]float64{4, 1, 3, 2}) != 2.5 || !math.IsNaN(Median(nil)) {
		t.Error("Median")
	}
	if ExactQuantile(nil, 0.5) != 0 || ExactQuantile([]int64{5, 1, 3}, 0.5) != 3 {
		t.Error("ExactQuantile")
	}
}

// TestProcParsing checks /proc parsing on fixed samples, including a command
// name with spaces and parentheses.
func TestProcParsing(t *testing.T) {
	stat := []byte("4242 (my (odd) srv) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 1000000 500 18446744073709551615\n")
	ticks, err := parseStatCPU(stat)
	if err != nil || ticks != 325 {
		t.Errorf("cpu ticks %d, %v; want 325", ticks, err)
	}
	if _, err := parseStatCPU([]byte("1 (x) S 1 2")); err == nil {
		t.Error("short stat accepted")
	}
	status := []byte("Name:\tsrv\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t9\n")
	if v, err := parseStatusKB(status, "VmRSS"); err != nil || v != 10240 {
		t.Errorf("VmRSS %d %v", v, err)
	}
	if v, err := parseStatusKB(status, "VmHWM"); err != nil || v != 20480 {
		t.Errorf("VmHWM %d %v", v, err)
	}
	if _, err := parseStatusKB(status, "VmSwap"); err == nil {
		t.Error("missing key accepted")
	}
	if ticksToSeconds(250) != 2.5 {
		t.Error("ticksToSeconds")
	}
}

// TestTargetLoopbackOnly checks that only loopback targets pass.
func TestTargetLoopbackOnly(t *testing.T) {
	good := []string{"http://127.0.0.1:8080", "http://127.1.2.3:1/", "http://[::1]:8080", "http://localhost:9", "http://LOCALHOST:9"}
	for _, g := range good {
		if _, err := parseTarget(g); err != nil {
			t.Errorf("%s refused: %v", g, err)
		}
	}
	bad := []string{
		"http://10.0.0.1:8080", "http://192.168.1.1:80", "http://8.8.8.8:80", "http://example.com:80",
		"http://localhost.example.com:80", "http://127.0.0.1.nip.io:80", "https://127.0.0.1:443",
		"ws://127.0.0.1:80", "http://0.0.0.0:8080", "http://[::]:8080", "http://[::ffff:10.0.0.1]:80",
		"http://127.0.0.1", "http://user@127.0.0.1:80", "http://127.0.0.1:80/x",
	}
	for _, b := range bad {
		if _, err := parseTarget(b); err == nil {
			t.Errorf("%s accepted", b)
		}
	}
	tg, _ := parseTarget("http://127.0.0.1:8080")
	if tg.wsURL != "ws://127.0.0.1:8080/ws" || tg.origin != "http://127.0.0.1:8080" || tg.ipv6 {
		t.Errorf("target %+v", *tg)
	}
}

// TestConfigCaps checks the hard caps and argument rules.
func TestConfigCaps(t *testing.T) {
	base := func() Config {
		return Config{Target: "http://127.0.0.1:1", Proto: protoOriginal, Clients: 10, Senders: 2, Rate: 1,
			Size: 64, Duration: 1e9, Room: "lobby", ConnectRate: 100, Settle: 1e9}
	}
	c := base()
	if _, err := c.validate(); err != nil {
		t.Fatalf("base config refused: %v", err)
	}
	mods := map[string]func(*Config){
		"too long":       func(c *Config) { c.Duration = maxDuration + 1 },
		"too many":       func(c *Config) { c.Clients = maxClients + 1 },
		"senders>client": func(c *Config) { c.Senders = 11 },
		"proto":          func(c *Config) { c.Proto = "other" },
		"room":           func(c *Config) { c.Room = "Bad Room" },
		"room quote":     func(c *Config) { c.Room = `a"b` },
		"rate":           func(c *Config) { c.Rate = 0 },
		"connect rate":   func(c *Config) { c.ConnectRate = 0 },
		"slow connect":   func(c *Config) { c.Clients, c.Senders, c.ConnectRate = 20000, 1, 10 },
		"target":         func(c *Config) { c.Target = "http://10.1.1.1:80" },
	}
	for name, m := range mods {
		c := base()
		m(&c)
		if _, err := c.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c = base()
	c.Idle, c.Senders, c.Rate, c.Duration = true, 0, 0, 0
	if _, err := c.validate(); err != nil {
		t.Errorf("idle config refused: %v", err)
	}
}

// TestSourceAddrs checks the spread of source addresses.
func TestSourceAddrs(t *testing.T) {
	if defaultSrcAddrs(1000) != 63 || defaultSrcAddrs(16) != 1 || defaultSrcAddrs(17) != 2 {
		t.Error("defaultSrcAddrs")
	}
	ips := sourceAddrs(300, false)
	if len(ips) != 300 || ips[0].String() != "127.0.0.2" || ips[1].String() != "127.0.0.3" {
		t.Fatalf("first addresses %v", ips[:2])
	}
	seen := map[string]bool{}
	for _, ip := range ips {
		if !ip.IsLoopback() || ip[15] == 0 || ip[15] == 255 || seen[ip.String()] {
			t.Errorf("bad source address %s", ip)
		}
		seen[ip.String()] = true
	}
	if v6 := sourceAddrs(5, true); len(v6) != 1 || v6[0].String() != "::1" {
		t.Errorf("ipv6 sources %v", v6)
	}
}

// TestFastField checks the JSON fast path and that it gives up on escapes.
func TestFastField(t *testing.T) {
	line := []byte(`{"type":"message","room":"lobby","id":7,"from":{"id":"u1","name":"text"},"ts":1,"text":"L|0|1|2|xx"}`)
	for key, want := range map[string]string{`"type":"`: "message", `"room":"`: "lobby", `"text":"`: "L|0|1|2|xx"} {
		got, ok := fastField(line, []byte(key))
		if !ok || string(got) != want {
			t.Errorf("%s: %q %v", key, got, ok)
		}
	}
	if _, ok := fastField([]byte(`{"type":"message","text":"a\"b"}`), keyText); ok {
		t.Error("escaped value should fall back")
	}
	if _, ok := fastField([]byte(`{"type": "message"}`), keyType); ok {
		t.Error("spaced JSON should fall back")
	}
}

// TestSummarize checks medians, ratios and the idle/load row selection.
func TestSummarize(t *testing.T) {
	mk := func(tag, proto string, ratio, dps float64, idle bool, perConn float64) *Report {
		return &Report{Tag: tag, Proto: proto, Clients: 10, Senders: 2, Rate: 1, Size: 64, DurationS: 5,
			DeliveryRatio: ratio, DeliveriesPerS: dps, Idle: idle, Connected: 10,
			Delivered: int64(dps * 5), LoadCPUSendS: 0.001 * dps * 5,
			Server: &ServerStats{CPUSeconds: 1, CPUSendSeconds: 0.002 * dps * 5, RSSPerConnKB: perConn}}
	}
	reps := []*Report{
		mk("W1", protoOriginal, 1, 100, false, 0), mk("W1", protoModified, 1, 50, false, 0),
		mk("W1", protoOriginal, 1, 300, false, 0), mk("W1", protoModified, 1, 70, false, 0),
		mk("W1", protoOriginal, 1, 200, false, 0), mk("W1", protoModified, 1, 60, false, 0),
		mk("W3", protoOriginal, 0, 0, true, 10), mk("W3", protoModified, 0, 0, true, 25),
	}
	var out strings.Builder
	if err := Summarize(reps, &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"deliveries/s", " 200 ", " 60 ", "0.30", "rss/conn kB", "2.50", "rounds 3/3",
		"server cpu µs/deliv", "chatload cpu µs/deliv", " 2000 ", " 1000 ",
		"100..300", "50..70", "0.30 (0.23..0.50)"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	w3 := s[strings.Index(s, "W3"):]
	if strings.Contains(w3, "deliveries/s") {
		t.Errorf("idle workload shows load rows:\n%s", s)
	}
	if err := Summarize(nil, &out); err == nil {
		t.Error("empty summarize accepted")
	}
}
