package main

// Accounting for the load generator: payload encoding, latency histograms,
// and delivery/duplicate/reorder counting. Everything here is pure (no I/O,
// no clocks, no goroutines) so it can be unit-tested exactly; the callers own
// the concurrency.

import (
	"math"
	"math/bits"
	"sort"
	"strconv"
)

// payloadTag starts every load message so that a receiver can tell our
// messages from anything else the server sends into the room.
const payloadTag = "L|"

// EncodePayload appends the text of one load message to dst: the sender's
// index, its sequence number and the send time in Unix nanoseconds, padded
// with 'x' up to size bytes. Receivers recover all three with ParsePayload,
// which is what makes latency and per-sender ordering measurable without any
// shared state between sender and receiver.
func EncodePayload(dst []byte, sender, seq int, sentNanos int64, size int) []byte {
	start := len(dst)
	dst = append(dst, payloadTag...)
	dst = strconv.AppendInt(dst, int64(sender), 10)
	dst = append(dst, '|')
	dst = strconv.AppendInt(dst, int64(seq), 10)
	dst = append(dst, '|')
	dst = strconv.AppendInt(dst, sentNanos, 10)
	dst = append(dst, '|')
	for len(dst)-start < size {
		dst = append(dst, 'x')
	}
	return dst
}

// ParsePayload reads what EncodePayload wrote. It works on byte slices and
// does not allocate, because a receiver parses every delivery and a run can
// see millions of them.
func ParsePayload(text []byte) (sender, seq int, sentNanos int64, ok bool) {
	if len(text) < len(payloadTag) || string(text[:len(payloadTag)]) != payloadTag {
		return 0, 0, 0, false
	}
	rest := text[len(payloadTag):]
	var fields [3]int64
	for i := range fields {
		v, n, good := parseUint(rest)
		if !good || n >= len(rest) || rest[n] != '|' {
			return 0, 0, 0, false
		}
		fields[i] = v
		rest = rest[n+1:]
	}
	if fields[0] > math.MaxInt32 || fields[1] > math.MaxInt32 {
		return 0, 0, 0, false
	}
	return int(fields[0]), int(fields[1]), fields[2], true
}

// parseUint reads a leading decimal number without allocating; it reports how
// many bytes it used and refuses empty or overflowing numbers so that a
// mangled payload is rejected instead of being misread.
func parseUint(b []byte) (v int64, n int, ok bool) {
	for n < len(b) && b[n] >= '0' && b[n] <= '9' {
		d := int64(b[n] - '0')
		if v > (math.MaxInt64-d)/10 {
			return 0, 0, false
		}
		v = v*10 + d
		n++
	}
	return v, n, n > 0 && n <= 19
}

// Histogram bucket layout: values below 2^histSubBits are exact; above, each
// power of two is split into 2^histSubBits linear buckets, so any recorded
// value is known to within 1/64 (about 1.6%) of itself. That is plenty for
// latency percentiles and costs a fixed ~18 KiB, unlike keeping every sample
// (tens of millions in a long run).
const (
	histSubBits = 6
	histSub     = 1 << histSubBits
	// histMaxValue caps recorded values (in nanoseconds: about 36 minutes),
	// longer than any run the tool allows.
	histMaxValue = int64(1)<<41 - 1
	histBuckets  = histSub + (41-histSubBits)*histSub
)

// Histogram is a log-linear histogram of non-negative int64 values
// (latencies in nanoseconds). The zero value is ready to use.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	min    int64
	max    int64
}

// histIndex maps a value to its bucket; see the layout comment above.
func histIndex(v int64) int {
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - histSubBits - 1
	top := int(v >> uint(shift)) // in [histSub, 2*histSub)
	return histSub + shift*histSub + (top - histSub)
}

// histUpper is the largest value that falls into bucket i; quantiles report
// it so that percentiles are never understated.
func histUpper(i int) int64 {
	if i < histSub {
		return int64(i)
	}
	shift := (i - histSub) / histSub
	top := int64(histSub + (i-histSub)%histSub)
	return (top+1)<<uint(shift) - 1
}

// Record adds one value, clamping it into [0, histMaxValue] so that a clock
// step or a wildly late message cannot index outside the table.
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	if v > histMaxValue {
		v = histMaxValue
	}
	h.counts[histIndex(v)]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
}

// Merge adds another histogram's counts; per-shard histograms are combined
// this way at the end of a run.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	h.n += o.n
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the exact largest recorded value (0 when empty).
func (h *Histogram) Max() int64 { return h.max }

// Min is the exact smallest recorded value (0 when empty).
func (h *Histogram) Min() int64 { return h.min }

// Quantile returns the value at quantile q (0..1) using the nearest-rank
// definition: the smallest recorded value such that at least q of all values
// are <= it. The answer is the upper edge of that value's bucket, clipped to
// the exact maximum, so it overstates by at most one bucket width.
func (h *Histogram) Quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := nearestRank(q, h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			u := histUpper(i)
			if u > h.max {
				u = h.max
			}
			if u < h.min {
				u = h.min
			}
			return u
		}
	}
	return h.max
}

// nearestRank converts a quantile into a 1-based rank among n values, shared
// by the histogram and the exact reference so both use one definition.
func nearestRank(q float64, n uint64) uint64 {
	if q <= 0 {
		return 1
	}
	if q >= 1 {
		return n
	}
	r := uint64(math.Ceil(q * float64(n)))
	if r < 1 {
		r = 1
	}
	return r
}

// ExactQuantile is the nearest-rank quantile of a slice of values. It sorts
// a copy; it exists as the reference the histogram is tested against and for
// small sample sets such as per-run medians.
func ExactQuantile(values []int64, q float64) int64 {
	if len(values) == 0 {
		return 0
	}
	s := append([]int64(nil), values...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[nearestRank(q, uint64(len(s)))-1]
}

// Median of float64 samples (the mean of the two middle ones for an even
// count); used to summarise repeated benchmark rounds. NaN when empty.
func Median(values []float64) float64 {
	if len(values) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), values...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// SeqTracker follows one sender's messages as seen by one receiver. A bitset
// of seen sequence numbers finds duplicates exactly; the highest sequence so
// far finds reordering (a sequence number that is not greater than one
// already seen from the same sender).
type SeqTracker struct {
	seen    []uint64
	highest int
	any     bool
}

// Observe records seq and says whether it was already seen (a duplicate) or
// arrived after a larger one (reordered). A duplicate is not also counted as
// reordered, so the two numbers in a report do not overlap.
func (t *SeqTracker) Observe(seq int) (dup, reordered bool) {
	if seq < 0 {
		return false, false
	}
	w, b := seq/64, uint(seq%64)
	if w >= len(t.seen) {
		n := 2 * len(t.seen)
		if n <= w {
			n = w + 1
		}
		grown := make([]uint64, n)
		copy(grown, t.seen)
		t.seen = grown
	}
	if t.seen[w]&(1<<b) != 0 {
		return true, false
	}
	t.seen[w] |= 1 << b
	if t.any && seq < t.highest {
		reordered = true
	}
	if !t.any || seq > t.highest {
		t.highest = seq
		t.any = true
	}
	return false, reordered
}

// Tally is one receiver's delivery accounting. Each receiving connection
// owns one (no locks on the hot path) and they are summed with Add at the end.
type Tally struct {
	// Senders is the number of sender indexes that are valid; messages
	// naming another sender are counted as Foreign.
	Senders   int
	trackers  []SeqTracker
	Delivered int64 // first-time deliveries of load messages
	Dups      int64 // deliveries of a (sender, seq) already seen
	Reordered int64 // deliveries whose seq is below one already seen from that sender
	Foreign   int64 // messages in the room that are not ours or name an unknown sender
}

// NewTally prepares a tally for messages from senders 0..senders-1.
func NewTally(senders int) *Tally {
	return &Tally{Senders: senders}
}

// Observe counts one delivery and reports whether it was new, so the caller
// records latency only once per (sender, seq) and keeps its live counters in
// step with the final numbers.
func (t *Tally) Observe(sender, seq int) (fresh bool) {
	if sender < 0 || sender >= t.Senders || seq < 0 {
		t.Foreign++
		return false
	}
	if t.trackers == nil {
		t.trackers = make([]SeqTracker, t.Senders)
	}
	dup, reord := t.trackers[sender].Observe(seq)
	switch {
	case dup:
		t.Dups++
		return false
	case reord:
		t.Reordered++
	}
	t.Delivered++
	return true
}

// Add sums another receiver's counts into t (trackers are per receiver and
// are not merged: ordering is a per-receiver property).
func (t *Tally) Add(o *Tally) {
	t.Delivered += o.Delivered
	t.Dups += o.Dups
	t.Reordered += o.Reordered
	t.Foreign += o.Foreign
}

// Expected is how many deliveries a run should see: every sent message
// reaches every connected receiver, the sender included (both servers echo a
// message to its sender).
func Expected(sent int64, receivers int) int64 {
	if sent <= 0 || receivers <= 0 {
		return 0
	}
	return sent * int64(receivers)
}

// Ratio divides safely, answering 0 for an empty denominator so that a run
// that sent nothing shows 0 rather than NaN in JSON (which cannot hold NaN).
func Ratio(num, den float64) float64 {
	if den == 0 {
		return 0
	}
	return num / den
}
