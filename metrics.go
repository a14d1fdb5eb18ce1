package main

import (
	"net/http"
	"net/http/pprof"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"modified-chat/internal/cluster"
	"modified-chat/internal/store"
)

// metrics are the server's Prometheus instruments. Each App has its own registry, so
// tests can run several servers in one process. Labels carry reasons and codes only:
// never a user, an address or any content.
type metrics struct {
	reg *prometheus.Registry

	connections      prometheus.Gauge
	rooms            prometheus.Gauge
	accepted         prometheus.Counter
	refused          *prometheus.CounterVec
	handshakeSeconds prometheus.Histogram
	messagesIn       prometheus.Counter
	messages         prometheus.Counter
	deliveries       prometheus.Counter
	framesOut        prometheus.Counter
	evictions        prometheus.Counter
	rateLimited      prometheus.Counter
	abuseCloses      prometheus.Counter
	panics           prometheus.Counter
	pumpPanics       *prometheus.CounterVec
	taskPanics       *prometheus.CounterVec
	httpPanics       *prometheus.CounterVec
	rejected         *prometheus.CounterVec
	repliesDropped   prometheus.Counter
	closes           *prometheus.CounterVec
	auth             *prometheus.CounterVec
	httpRefused      *prometheus.CounterVec
	storeCommits     prometheus.Counter
	storeErrors      prometheus.Counter
	storeSeconds     prometheus.Histogram
	backups          *prometheus.CounterVec
}

// registerCluster exposes the room feed's counters (cluster mode only): forged and
// replayed entries dropped, PUB/SUB messages dropped by a full inbox, entries read from
// the Streams to fill gaps, and rooms given up with a resync.
func (m *metrics) registerCluster(c *cluster.Counters) {
	for name, v := range map[string]struct {
		help string
		n    *atomic.Uint64
	}{
		"chat_cluster_bad_mac_total":        {"Cluster entries dropped because their MAC did not verify (forged, or another key).", &c.BadMAC},
		"chat_cluster_replayed_total":       {"Cluster entries dropped as replays of ones already seen.", &c.Replayed},
		"chat_cluster_pubsub_dropped_total": {"PUB/SUB messages dropped by a full inbox (then caught up from the Streams).", &c.Dropped},
		"chat_cluster_filled_total":         {"Room entries read from the Streams to fill gaps PUB/SUB left.", &c.Filled},
		"chat_cluster_resyncs_total":        {"Rooms whose gap could not be filled; their local members were closed with 4000.", &c.Resyncs},
	} {
		n := v.n
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: v.help}, func() float64 { return float64(n.Load()) }))
	}
}

// newMetrics registers every instrument on a fresh registry.
func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &metrics{reg: reg}
	m.connections = prometheus.NewGauge(prometheus.GaugeOpts{Name: "chat_connections", Help: "Open WebSocket connections."})
	m.rooms = prometheus.NewGauge(prometheus.GaugeOpts{Name: "chat_rooms", Help: "Rooms in memory."})
	m.accepted = prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_connections_accepted_total", Help: "WebSocket connections accepted."})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chat_connections_refused_total", Help: "WebSocket handshakes refused, by reason."}, []string{"reason"})
	m.handshakeSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "chat_handshake_seconds", Help: "Time from request to upgraded connection.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 12)})
	m.messagesIn = prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_client_messages_total", Help: "Protocol objects received from clients."})
	m.messages = prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_messages_total", Help: "Chat messages accepted and broadcast."})
	m.deliveries = prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_deliveries_total", Help: "Chat messages queued to recipients."})
	m.framesOut = prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_frames_out_total", Help: "WebSocket frames written (after coalescing); each connection adds its count every 64 frames and when it ends."})
	m.evictions = prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_slow_consumer_evictions_total", Help: "Clients closed because they fell too far behind: queue and backlog full, or one write stuck past the write timeout."})
	m.rateLimited = prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_rate_limited_total", Help: "Client messages dropped by a token bucket."})
	m.abuseCloses = prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_rate_limit_closes_total", Help: "Connections closed for sustained rate-limit abuse."})
	m.panics = prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_command_panics_total", Help: "Client commands whose handler panicked (a bug): the sender was closed with 1011, the server went on."})
	m.pumpPanics = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chat_pump_panics_total", Help: "Connection pumps that panicked (a bug), by pump (read, write): that connection was closed with 1011, the server went on."}, []string{"pump"})
	m.taskPanics = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chat_task_panics_total", Help: "Per-request reads off the hub's loop that panicked (a bug), by task (history, fetch_file, room_read, ...): that request was answered internal, its connection and the server went on."}, []string{"task"})
	m.httpPanics = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chat_http_panics_total", Help: "HTTP handlers that panicked (a bug), by route (the mux pattern, or unmatched): answered 500 when nothing was written yet, cut otherwise; the server went on."}, []string{"route"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chat_rejected_total", Help: "Client input refused by the filters, by reason."}, []string{"reason"})
	m.repliesDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_replies_dropped_total", Help: "Error replies dropped because the client did not read them."})
	m.closes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chat_closes_total", Help: "Close frames sent by the server, by close code."}, []string{"code"})
	m.auth = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chat_auth_total", Help: "Login attempts, by result and reason."}, []string{"result", "reason"})
	m.httpRefused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chat_http_refused_total", Help: "HTTP requests refused before their handler ran: host (421), login_rate (429), cross_origin (403), ip_table_full (503)."}, []string{"reason"})
	m.storeCommits = prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_store_commits_total", Help: "Store transactions committed (each may hold many writes)."})
	m.storeErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "chat_store_errors_total", Help: "Store transactions that failed."})
	m.storeSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "chat_store_commit_seconds", Help: "Time to commit one store transaction, fsync included.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14)})
	m.backups = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chat_backups_total", Help: "Backups requested on the admin listener, by result (ok, failed, refused)."}, []string{"result"})
	for _, c := range []prometheus.Collector{
		m.connections, m.rooms, m.accepted, m.refused, m.handshakeSeconds, m.messagesIn,
		m.messages, m.deliveries, m.framesOut, m.evictions, m.rateLimited, m.abuseCloses,
		m.panics, m.pumpPanics, m.taskPanics, m.httpPanics, m.rejected, m.repliesDropped, m.closes, m.auth, m.httpRefused, m.storeCommits, m.storeErrors, m.storeSeconds, m.backups,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		f(c)
	}
	return m
}

// handler serves /metrics and pprof. It belongs on a separate listener (loopback by
// default): profiles and counters are for operators, not for the internet.
func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// observeCommit records one store transaction; the store writer calls it.
func (m *metrics) observeCommit(c store.Commit) {
	m.storeCommits.Inc()
	m.storeSeconds.Observe(c.Took.Seconds())
	if c.Err != nil {
		m.storeErrors.Inc()
	}
}
