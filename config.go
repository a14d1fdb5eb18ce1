package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"modified-chat/internal/cluster"
)

// Config holds every tunable of the server. Each field is set by a flag and by its
// environment twin (the flag name upper-cased, dashes to underscores, prefixed with
// CHAT_); a flag given on the command line wins over the environment. The zero-config
// defaults are the safe ones: loopback only, development login, small limits.
type Config struct {
	// Addr is the listen address. Default 127.0.0.1:8080: a laptop demo is not exposed.
	Addr string
	// PublicURL is the externally visible base URL (https://chat.example.org). It fixes
	// the page's own origin for the Origin check and the CSP. Empty means "derive it
	// from the request", which is right for a laptop and behind no proxy.
	PublicURL string
	// AllowedOrigins are extra origins allowed to open the WebSocket.
	AllowedOrigins []string
	// TLSCert and TLSKey enable HTTPS (and HSTS, and Secure __Host- cookies).
	TLSCert, TLSKey string
	// TLSAutocert lists the host names to get certificates for from an ACME CA (Let's
	// Encrypt by default). Only these names ever get one. Empty means off.
	TLSAutocert []string
	// ACMEDirectory is the ACME CA's directory URL. Default Let's Encrypt production.
	ACMEDirectory string
	// ACMEEmail is the contact address given to the CA (expiry notices). Empty: none.
	ACMEEmail string
	// ACMECAFile holds the CA certificates trusted for talking to the ACME directory (a
	// private CA such as step-ca). Empty means the system roots.
	ACMECAFile string
	// ACMEHTTPAddr is the plain-HTTP listener that answers http-01 challenges and
	// redirects everything else to https. Default :80, which is where CAs look.
	ACMEHTTPAddr string
	// Version prints the version and build information, then exits.
	Version bool
	// DataDir holds the session key and, later, the store. Created if missing.
	DataDir string
	// LogJSON switches the log format from text to JSON.
	LogJSON bool
	// LogLevel is debug, info, warn or error.
	LogLevel string

	// SessionKeyFile names a file holding the 32-byte session key (hex or raw).
	// Empty means <DataDir>/session.key, generated on first start.
	SessionKeyFile string
	// SessionTTL is the absolute lifetime of a session cookie.
	SessionTTL time.Duration
	// DevLoginAnywhere lets the development login run on a non-loopback address.
	DevLoginAnywhere bool

	// OIDCIssuer is the OpenID Connect issuer discovered at start-up. Google by default.
	OIDCIssuer string
	// OIDCClientID turns OpenID Connect login on (and the development login off).
	OIDCClientID string
	// OIDCClientSecret is the client secret. OIDCClientSecretFile names a file holding
	// it instead, so it need not sit in the environment or the process list.
	OIDCClientSecret     string
	OIDCClientSecretFile string
	// OIDCProviderName is shown on the login button; empty means derived from the issuer.
	OIDCProviderName string
	// AllowedDomains and AllowedEmails are the login allow-lists. Both empty means any
	// account with a verified email at the issuer may sign in.
	AllowedDomains []string
	AllowedEmails  []string

	// ReadLimit caps one WebSocket frame (and its decompressed stream), in bytes.
	ReadLimit int64
	// TextMaxChars caps a message's text, in characters, after cleaning.
	TextMaxChars int
	// BlockedPatterns are regular expressions a message's text must not match.
	BlockedPatterns []string
	// Compression enables permessage-deflate. Off by default: see client.go.
	Compression bool

	// MsgRate and MsgBurst form the per-connection message bucket.
	MsgRate  float64
	MsgBurst int
	// ByteRate and ByteBurst form the per-connection byte bucket.
	ByteRate  float64
	ByteBurst int
	// UserMsgRate and UserMsgBurst form the per-user bucket shared by all of a user's
	// connections, so opening more connections does not multiply a user's budget.
	UserMsgRate  float64
	UserMsgBurst int
	// ReplyByteRate and ReplyByteBurst form the per-connection budget for the bytes the
	// server sends in answer to requests (history pages, member lists, room lists,
	// audit), so that a short command cannot buy a long answer again and again.
	ReplyByteRate  float64
	ReplyByteBurst int
	// AbuseDrops rate-limited messages within AbuseWindow close the connection (1008).
	AbuseDrops  int
	AbuseWindow time.Duration

	// IPHandshakeRate and IPHandshakeBurst limit WebSocket handshakes per client IP.
	IPHandshakeRate  float64
	IPHandshakeBurst int
	// LoginRate and LoginBurst limit requests to the login routes (/login, /login/dev,
	// /auth/callback, /logout) per client IP. The defaults (2/s, 60) let a whole office
	// behind one address sign in at nine, and stop a script logging in thousands of
	// times a second.
	LoginRate  float64
	LoginBurst int
	// MaxConnsPerIP, MaxConnsPerUser and MaxConns cap concurrent connections.
	MaxConnsPerIP   int
	MaxConnsPerUser int
	MaxConns        int
	// MaxTrackedIPs bounds the per-IP table (DoS hardening against rotating addresses).
	MaxTrackedIPs int
	// TrustedProxies are the proxies whose X-Forwarded-For is believed. None by default.
	TrustedProxies []netip.Prefix

	// MaxRoomsPerClient and MaxMembersPerRoom cap room fan-in and fan-out.
	MaxRoomsPerClient int
	MaxMembersPerRoom int
	// SendQueue is the length of a client's outbound queue. SendBacklog is how many
	// more events the hub holds for a client whose queue is full before it evicts it
	// as dead or stuck.
	SendQueue   int
	SendBacklog int
	// SendQueueBytes bounds the bytes of the events waiting for one client, queue and
	// backlog together: with file events of 1.4 MB, 32 + 4096 events would let one slow
	// reader pin gigabytes. Beyond it the client is evicted as too slow (1008). Default
	// 16 MiB: a dozen full-size file events and a full history page, far more than a
	// live reader ever has waiting, small enough that a thousand stuck readers cannot
	// exhaust a server. It must hold at least two of the largest events (validate).
	SendQueueBytes int64
	// MOTD is shown to everyone on connect.
	MOTD string
	// MembersCanCreateRooms lets members (not only moderators and admins) create rooms.
	MembersCanCreateRooms bool
	// MaxRooms bounds the number of rooms the server keeps (DoS hardening: every room
	// has durable metadata).
	MaxRooms int

	// Admins, Moderators and ReadOnlyUsers assign global roles at start-up. Entries are
	// emails, domains (@example.org) or user ids (dev:alice).
	Admins, Moderators, ReadOnlyUsers []string
	// PolicyFile is a JSON file {"admins":[],"moderators":[],"readonly":[]} adding to
	// the three lists above, reloaded on SIGHUP.
	PolicyFile string
	// FileMaxBytes caps one file (a binary frame). FileRate and FileBurst form the
	// per-connection bucket for file bytes, separate from the text buckets.
	FileMaxBytes int64
	FileRate     float64
	FileBurst    int
	// FileTypes is the allow-list of sniffed content types.
	FileTypes []string

	// HistoryMax and HistoryMaxAge bound each room's stored history; HistoryOnJoin is
	// how many recent messages a joiner gets; HistoryResumeMax how many a reconnecting
	// client may catch up on; HistoryFileMax the largest file kept in history.
	HistoryMax       int
	HistoryMaxAge    time.Duration
	HistoryOnJoin    int
	HistoryResumeMax int
	HistoryFileMax   int64

	// MaxDevicesPerUser caps the live devices (browser profiles with a signing key)
	// one user may have in the key directory. Default 10.
	MaxDevicesPerUser int

	// Store selects the durable store: "bolt" (a file in DataDir) or "memory" (lost at
	// exit; for tests and demos).
	Store string

	// ShutdownGrace bounds how long shutdown waits for clients to take their 1001.
	ShutdownGrace time.Duration
	// MetricsAddr is the separate listener for Prometheus metrics and pprof; empty = off.
	MetricsAddr string

	// RedisURL turns cluster mode on (redis://[user:password@]host:port[/db], or
	// rediss:// for TLS): Redis numbers, keeps and fans out every room's messages, so
	// several nodes behind a load balancer share rooms (SCALE-OUT.md). Empty (the
	// default) means a single node: nothing connects to any Redis.
	RedisURL string
	// RedisPrefix starts every key and channel name, so one Redis can hold several
	// deployments and the ACL can confine this one (~<prefix>:*). Default mc.
	RedisPrefix string
	// RedisWait bounds how long start-up waits for Redis before it gives up and exits
	// 1. A node never falls back to its own store: that would be a split brain.
	// Default 30s.
	RedisWait time.Duration
	// ClusterKeyFile holds the cluster key (64 hex characters a line; the first seals,
	// the others are accepted while a key is rotated), the same file on every node,
	// mode 0600, separate from the session key. Required with -redis-url.
	ClusterKeyFile string

	// explicit holds the names of the flags given on the command line or through their
	// environment twins (nil: none), so start-up can say when stored run-time settings
	// override what the operator asked for. Copies share it; nobody writes it after
	// parseConfig.
	explicit map[string]bool
}

// defaultConfig returns the zero-configuration settings.
func defaultConfig() *Config {
	return &Config{
		Addr:                  "127.0.0.1:8080",
		ACMEDirectory:         "https://acme-v02.api.letsencrypt.org/directory",
		ACMEHTTPAddr:          ":80",
		DataDir:               "data",
		LogLevel:              "info",
		SessionTTL:            12 * time.Hour,
		OIDCIssuer:            "https://accounts.google.com",
		ReadLimit:             8 << 10,
		TextMaxChars:          2000,
		MsgRate:               5,
		MsgBurst:              10,
		ByteRate:              16 << 10,
		ByteBurst:             64 << 10,
		ReplyByteRate:         256 << 10,
		ReplyByteBurst:        4 << 20,
		UserMsgRate:           10,
		UserMsgBurst:          20,
		AbuseDrops:            20,
		AbuseWindow:           10 * time.Second,
		IPHandshakeRate:       2,
		IPHandshakeBurst:      40,
		LoginRate:             2,
		LoginBurst:            60,
		MaxConnsPerIP:         32,
		MaxConnsPerUser:       8,
		MaxConns:              20000,
		MaxTrackedIPs:         100000,
		MaxRoomsPerClient:     16,
		MaxMembersPerRoom:     5000,
		SendQueue:             32,
		SendBacklog:           4096,
		SendQueueBytes:        16 << 20,
		MembersCanCreateRooms: true,
		FileMaxBytes:          1 << 20,
		FileRate:              256 << 10,
		FileBurst:             2 << 20,
		FileTypes:             []string{"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"},
		HistoryMax:            1000,
		HistoryMaxAge:         30 * 24 * time.Hour,
		HistoryOnJoin:         50,
		HistoryResumeMax:      500,
		HistoryFileMax:        256 << 10,
		MaxRooms:              10000,
		Store:                 "bolt",
		MaxDevicesPerUser:     10,
		ShutdownGrace:         5 * time.Second,
		MetricsAddr:           "127.0.0.1:9090",
		RedisPrefix:           "mc",
		RedisWait:             30 * time.Second,
	}
}

// listValue is a comma-separated flag that fills a []string.
type listValue struct{ p *[]string }

// String shows the list as it would be given.
func (l listValue) String() string {
	if l.p == nil {
		return ""
	}
	return strings.Join(*l.p, ",")
}

// Set replaces the list with the comma-separated items of s.
func (l listValue) Set(s string) error {
	*l.p = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l.p = append(*l.p, part)
		}
	}
	return nil
}

// prefixListValue is a comma-separated flag of addresses or CIDR prefixes.
type prefixListValue struct{ p *[]netip.Prefix }

// String shows the prefixes as they would be given.
func (l prefixListValue) String() string {
	if l.p == nil {
		return ""
	}
	var parts []string
	for _, p := range *l.p {
		parts = append(parts, p.String())
	}
	return strings.Join(parts, ",")
}

// Set parses comma-separated addresses (as single-address prefixes) and CIDRs.
func (l prefixListValue) Set(s string) error {
	*l.p = nil
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !strings.Contains(part, "/") {
			a, err := netip.ParseAddr(part)
			if err != nil {
				return err
			}
			part = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()).String()
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return err
		}
		*l.p = append(*l.p, p.Masked())
	}
	return nil
}

// newFlagSet declares every flag on fs, bound to cfg.
func newFlagSet(cfg *Config) *flag.FlagSet {
	fs := flag.NewFlagSet("modified-chat", flag.ContinueOnError)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "listen address")
	fs.StringVar(&cfg.PublicURL, "public-url", cfg.PublicURL, "external base URL, e.g. https://chat.example.org (empty: derived from each request)")
	fs.Var(listValue{&cfg.AllowedOrigins}, "allowed-origins", "extra origins allowed to open the WebSocket, comma-separated")
	fs.StringVar(&cfg.TLSCert, "tls-cert", cfg.TLSCert, "TLS certificate file (enables HTTPS)")
	fs.StringVar(&cfg.TLSKey, "tls-key", cfg.TLSKey, "TLS key file")
	fs.Var(listValue{&cfg.TLSAutocert}, "tls-autocert", "host names to get certificates for by ACME, comma-separated (enables HTTPS; needs -acme-http-addr reachable as port 80)")
	fs.StringVar(&cfg.ACMEDirectory, "acme-directory", cfg.ACMEDirectory, "ACME directory URL for -tls-autocert")
	fs.StringVar(&cfg.ACMEEmail, "acme-email", cfg.ACMEEmail, "contact email given to the ACME CA (empty: none)")
	fs.StringVar(&cfg.ACMECAFile, "acme-ca-file", cfg.ACMECAFile, "PEM CA certificates trusted for the ACME directory (empty: system roots)")
	fs.StringVar(&cfg.ACMEHTTPAddr, "acme-http-addr", cfg.ACMEHTTPAddr, "listener for ACME http-01 challenges and the redirect to https, with -tls-autocert")
	fs.BoolVar(&cfg.Version, "version", cfg.Version, "print the version and build information, then exit")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the session key and state")
	fs.BoolVar(&cfg.LogJSON, "log-json", cfg.LogJSON, "log as JSON instead of text")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level: debug, info, warn, error")

	fs.StringVar(&cfg.SessionKeyFile, "session-key-file", cfg.SessionKeyFile, "file with the 32-byte session key (empty: <data-dir>/session.key, generated once)")
	fs.DurationVar(&cfg.SessionTTL, "session-ttl", cfg.SessionTTL, "absolute lifetime of a login session")
	fs.BoolVar(&cfg.DevLoginAnywhere, "dev-login-anywhere", cfg.DevLoginAnywhere, "DANGEROUS: allow the development login on a non-loopback address")
	fs.StringVar(&cfg.OIDCIssuer, "oidc-issuer", cfg.OIDCIssuer, "OpenID Connect issuer URL, discovered at start-up")
	fs.StringVar(&cfg.OIDCClientID, "oidc-client-id", cfg.OIDCClientID, "OpenID Connect client ID; setting it turns the development login off (needs -public-url)")
	fs.StringVar(&cfg.OIDCClientSecret, "oidc-client-secret", cfg.OIDCClientSecret, "OpenID Connect client secret (prefer -oidc-client-secret-file)")
	fs.StringVar(&cfg.OIDCClientSecretFile, "oidc-client-secret-file", cfg.OIDCClientSecretFile, "file holding the OpenID Connect client secret")
	fs.StringVar(&cfg.OIDCProviderName, "oidc-provider-name", cfg.OIDCProviderName, "provider name on the login button (empty: derived from the issuer)")
	fs.Var(listValue{&cfg.AllowedDomains}, "allowed-domains", "email domains allowed to sign in, comma-separated (Google: the Workspace domain, hd)")
	fs.Var(listValue{&cfg.AllowedEmails}, "allowed-emails", "email addresses allowed to sign in, comma-separated")

	fs.Int64Var(&cfg.ReadLimit, "read-limit", cfg.ReadLimit, "largest WebSocket frame accepted, in bytes (larger closes with 1009)")
	fs.IntVar(&cfg.TextMaxChars, "text-max-chars", cfg.TextMaxChars, "longest message text, in characters")
	fs.Var(listValue{&cfg.BlockedPatterns}, "blocked-patterns", "regular expressions refused in message text, comma-separated")
	fs.BoolVar(&cfg.Compression, "compression", cfg.Compression, "enable permessage-deflate (the decompressed stream is capped by -read-limit too)")

	fs.Float64Var(&cfg.MsgRate, "msg-rate", cfg.MsgRate, "messages per second per connection")
	fs.IntVar(&cfg.MsgBurst, "msg-burst", cfg.MsgBurst, "message burst per connection")
	fs.Float64Var(&cfg.ByteRate, "byte-rate", cfg.ByteRate, "bytes per second per connection")
	fs.IntVar(&cfg.ByteBurst, "byte-burst", cfg.ByteBurst, "byte burst per connection")
	fs.Float64Var(&cfg.ReplyByteRate, "reply-byte-rate", cfg.ReplyByteRate, "bytes per second per connection of answers to requests (history, member and room lists, audit)")
	fs.IntVar(&cfg.ReplyByteBurst, "reply-byte-burst", cfg.ReplyByteBurst, "burst of -reply-byte-rate (at least one history page, 1 MiB)")
	fs.Float64Var(&cfg.UserMsgRate, "user-msg-rate", cfg.UserMsgRate, "messages per second per user, shared by all their connections")
	fs.IntVar(&cfg.UserMsgBurst, "user-msg-burst", cfg.UserMsgBurst, "message burst per user")
	fs.IntVar(&cfg.AbuseDrops, "abuse-drops", cfg.AbuseDrops, "rate-limited messages within -abuse-window that close the connection (1008)")
	fs.DurationVar(&cfg.AbuseWindow, "abuse-window", cfg.AbuseWindow, "window for -abuse-drops")

	fs.Float64Var(&cfg.IPHandshakeRate, "ip-handshake-rate", cfg.IPHandshakeRate, "WebSocket handshakes per second per client IP (IPv6 per /64)")
	fs.IntVar(&cfg.IPHandshakeBurst, "ip-handshake-burst", cfg.IPHandshakeBurst, "WebSocket handshake burst per client IP")
	fs.Float64Var(&cfg.LoginRate, "login-rate", cfg.LoginRate, "requests per second per client IP to /login, /login/dev, /auth/callback and /logout (429 beyond)")
	fs.IntVar(&cfg.LoginBurst, "login-burst", cfg.LoginBurst, "login route burst per client IP")
	fs.IntVar(&cfg.MaxConnsPerIP, "max-conns-per-ip", cfg.MaxConnsPerIP, "concurrent connections per client IP")
	fs.IntVar(&cfg.MaxConnsPerUser, "max-conns-per-user", cfg.MaxConnsPerUser, "concurrent connections per user")
	fs.IntVar(&cfg.MaxConns, "max-conns", cfg.MaxConns, "concurrent connections in all")
	fs.IntVar(&cfg.MaxTrackedIPs, "max-tracked-ips", cfg.MaxTrackedIPs, "size bound of the per-IP table")
	fs.Var(prefixListValue{&cfg.TrustedProxies}, "trusted-proxies", "proxy addresses or CIDRs whose X-Forwarded-For is believed, comma-separated (default none)")

	fs.IntVar(&cfg.MaxRoomsPerClient, "max-rooms-per-client", cfg.MaxRoomsPerClient, "rooms one connection may be in")
	fs.IntVar(&cfg.MaxMembersPerRoom, "max-members-per-room", cfg.MaxMembersPerRoom, "connections one room may hold")
	fs.IntVar(&cfg.SendQueue, "send-queue", cfg.SendQueue, "outbound events queued per connection")
	fs.IntVar(&cfg.SendBacklog, "send-backlog", cfg.SendBacklog, "events held for a connection whose queue is full before it is evicted as too slow")
	fs.Int64Var(&cfg.SendQueueBytes, "send-queue-bytes", cfg.SendQueueBytes, "bytes of events waiting for one connection (queue and backlog) before it is evicted as too slow; bounds what one slow reader pins")
	fs.StringVar(&cfg.MOTD, "motd", cfg.MOTD, "message of the day shown on connect")
	fs.BoolVar(&cfg.MembersCanCreateRooms, "members-create-rooms", cfg.MembersCanCreateRooms, "members may create rooms (moderators and admins always may)")
	fs.IntVar(&cfg.MaxRooms, "max-rooms", cfg.MaxRooms, "rooms the server keeps at most")
	fs.Var(listValue{&cfg.Admins}, "admins", "global admins: emails, @domains or user ids, comma-separated")
	fs.Var(listValue{&cfg.Moderators}, "moderators", "global moderators: emails, @domains or user ids, comma-separated")
	fs.Var(listValue{&cfg.ReadOnlyUsers}, "readonly", "read-only users: emails, @domains or user ids, comma-separated")
	fs.StringVar(&cfg.PolicyFile, "policy-file", cfg.PolicyFile, "JSON role policy {\"admins\":[],\"moderators\":[],\"readonly\":[]}, reloaded on SIGHUP")
	fs.StringVar(&cfg.Store, "store", cfg.Store, "durable store: bolt (file in -data-dir) or memory")
	fs.IntVar(&cfg.MaxDevicesPerUser, "max-devices-per-user", cfg.MaxDevicesPerUser, "live signing devices one user may register in the key directory")
	fs.Int64Var(&cfg.FileMaxBytes, "file-max-bytes", cfg.FileMaxBytes, "largest file accepted, in bytes")
	fs.Float64Var(&cfg.FileRate, "file-rate", cfg.FileRate, "file bytes per second per connection")
	fs.IntVar(&cfg.FileBurst, "file-burst", cfg.FileBurst, "file byte burst per connection (at least -file-max-bytes)")
	fs.Var(listValue{&cfg.FileTypes}, "file-types", "allowed file types, as sniffed from the content, comma-separated")
	fs.IntVar(&cfg.HistoryMax, "history-max", cfg.HistoryMax, "messages kept per room")
	fs.DurationVar(&cfg.HistoryMaxAge, "history-max-age", cfg.HistoryMaxAge, "oldest message kept")
	fs.IntVar(&cfg.HistoryOnJoin, "history-on-join", cfg.HistoryOnJoin, "recent messages sent to a joiner")
	fs.IntVar(&cfg.HistoryResumeMax, "history-resume-max", cfg.HistoryResumeMax, "messages a reconnecting client may catch up on per room")
	fs.Int64Var(&cfg.HistoryFileMax, "history-file-max", cfg.HistoryFileMax, "largest file kept in history, in bytes (larger ones are delivered live only)")

	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", cfg.ShutdownGrace, "how long shutdown waits for clients")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "listener for /metrics and /debug/pprof (empty: off)")
	fs.StringVar(&cfg.RedisURL, "redis-url", cfg.RedisURL, "Redis URL turning cluster mode on, e.g. redis://127.0.0.1:6379 (empty: single node, no Redis)")
	fs.StringVar(&cfg.RedisPrefix, "redis-prefix", cfg.RedisPrefix, "prefix of every Redis key and channel (the ACL pattern is <prefix>:*)")
	fs.DurationVar(&cfg.RedisWait, "redis-wait", cfg.RedisWait, "how long start-up waits for Redis before exiting 1")
	fs.StringVar(&cfg.ClusterKeyFile, "cluster-key-file", cfg.ClusterKeyFile, "file with the cluster key (64 hex characters, mode 0600), the same on every node; required with -redis-url")
	return fs
}

// envName is the environment twin of a flag: -max-conns is CHAT_MAX_CONNS.
func envName(flagName string) string {
	return "CHAT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseConfig reads the environment twins first and then the command line, so a flag
// given explicitly wins. getenv is injected for tests.
func parseConfig(args []string, getenv func(string) string) (*Config, error) {
	cfg := defaultConfig()
	fs := newFlagSet(cfg)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: modified-chat [flags]\n       modified-chat backup [-admin-addr ADDR] FILE\n       modified-chat restore [-data-dir DIR] FILE\n\nEvery flag has an environment twin: -max-conns is CHAT_MAX_CONNS.\n\n")
		fs.PrintDefaults()
	}
	var envErr error
	cfg.explicit = map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		if v := getenv(envName(f.Name)); v != "" {
			cfg.explicit[f.Name] = true
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s: %w", envName(f.Name), err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	fs.Visit(func(f *flag.Flag) { cfg.explicit[f.Name] = true })
	return cfg, cfg.validate()
}

// validate refuses settings that would disable a defence by accident (zero or negative
// limits) or that cannot work together.
func (c *Config) validate() error {
	var errs []error
	positive := map[string]float64{
		"read-limit": float64(c.ReadLimit), "text-max-chars": float64(c.TextMaxChars),
		"msg-rate": c.MsgRate, "msg-burst": float64(c.MsgBurst),
		"byte-rate": c.ByteRate, "byte-burst": float64(c.ByteBurst),
		"reply-byte-rate": c.ReplyByteRate,
		"user-msg-rate":   c.UserMsgRate, "user-msg-burst": float64(c.UserMsgBurst),
		"abuse-drops": float64(c.AbuseDrops), "abuse-window": float64(c.AbuseWindow),
		"ip-handshake-rate": c.IPHandshakeRate, "ip-handshake-burst": float64(c.IPHandshakeBurst),
		"login-rate": c.LoginRate, "login-burst": float64(c.LoginBurst),
		"max-conns-per-ip": float64(c.MaxConnsPerIP), "max-conns-per-user": float64(c.MaxConnsPerUser),
		"max-conns": float64(c.MaxConns), "max-tracked-ips": float64(c.MaxTrackedIPs),
		"max-rooms-per-client": float64(c.MaxRoomsPerClient), "max-members-per-room": float64(c.MaxMembersPerRoom),
		"send-queue": float64(c.SendQueue), "session-ttl": float64(c.SessionTTL), "send-backlog": float64(c.SendBacklog),
		"max-rooms": float64(c.MaxRooms), "max-devices-per-user": float64(c.MaxDevicesPerUser),
		"send-queue-bytes": float64(c.SendQueueBytes), "file-max-bytes": float64(c.FileMaxBytes),
		"file-rate": c.FileRate, "file-burst": float64(c.FileBurst),
		"history-max": float64(c.HistoryMax), "history-max-age": float64(c.HistoryMaxAge),
		"history-on-join": float64(c.HistoryOnJoin), "history-resume-max": float64(c.HistoryResumeMax),
	}
	for name, v := range positive {
		if !(v > 0) {
			errs = append(errs, fmt.Errorf("-%s must be positive", name))
		}
	}
	if c.ReadLimit > 16<<20 {
		errs = append(errs, errors.New("-read-limit above 16 MiB is refused"))
	}
	if int64(c.ByteBurst) < c.ReadLimit {
		errs = append(errs, errors.New("-byte-burst must be at least -read-limit, or a full frame could never pass"))
	}
	if c.ReplyByteBurst < historyPageBytes {
		errs = append(errs, fmt.Errorf("-reply-byte-burst must be at least %d, one history page", historyPageBytes))
	}
	if int64(c.FileBurst) < c.FileMaxBytes {
		errs = append(errs, errors.New("-file-burst must be at least -file-max-bytes, or no full-size file could pass"))
	}
	if c.SendQueueBytes < 2*maxEventBytes(c) {
		errs = append(errs, fmt.Errorf("-send-queue-bytes must be at least %d: two of the largest events (a file of -file-max-bytes in base64, or a history page)", 2*maxEventBytes(c)))
	}
	if c.FileMaxBytes > 16<<20 {
		errs = append(errs, errors.New("-file-max-bytes above 16 MiB is refused"))
	}
	for _, ft := range c.FileTypes {
		if !knownFileType(ft) {
			errs = append(errs, fmt.Errorf("-file-types: %q is not a type the sniffer recognises", ft))
		}
	}
	if c.Store != "bolt" && c.Store != "memory" {
		errs = append(errs, errors.New("-store must be bolt or memory"))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("-tls-cert and -tls-key go together"))
	}
	errs = append(errs, c.validateAutocert()...)
	if _, err := compilePatterns(c.BlockedPatterns); err != nil {
		errs = append(errs, err)
	}
	for _, o := range c.AllowedOrigins {
		if _, err := normaliseOrigin(o); err != nil {
			errs = append(errs, fmt.Errorf("-allowed-origins %q: %w", o, err))
		}
	}
	if c.PublicURL != "" {
		if _, err := normaliseOrigin(c.PublicURL); err != nil {
			errs = append(errs, fmt.Errorf("-public-url: %w", err))
		}
	}
	errs = append(errs, c.validateOIDC()...)
	errs = append(errs, c.validateCluster()...)
	return errors.Join(errs...)
}

// maxEventBytes is the largest single event the server sends: a file of FileMaxBytes
// in base64 with its envelope, or a history page.
func maxEventBytes(c *Config) int64 {
	return max((c.FileMaxBytes+2)/3*4+fileEventSlack, historyPageBytes+fileEventSlack)
}

// readSecretFile reads a secret kept in a file (so it stays out of the environment and
// the process list) and returns it without surrounding white space.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// validateCluster checks the cluster flags: they matter only with -redis-url, and then
// the cluster key is required (without it any Redis client could write as a node).
func (c *Config) validateCluster() []error {
	if c.RedisURL == "" {
		return nil
	}
	var errs []error
	if c.ClusterKeyFile == "" {
		errs = append(errs, errors.New("-redis-url needs -cluster-key-file (the same key file on every node)"))
	}
	if _, err := cluster.NewKeys(c.RedisPrefix); err != nil {
		errs = append(errs, err)
	}
	if c.RedisWait <= 0 {
		errs = append(errs, errors.New("-redis-wait must be positive"))
	}
	return errs
}
