package main

// Run configuration: the flags, their limits, and the loopback-only rule.

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Hard caps. They keep a mistyped command from turning the tool into a
// long-running flood; a real need beyond them deserves a code change.
const (
	maxDuration    = 10 * time.Minute
	maxClients     = 20000
	maxSize        = 64 << 10
	maxRate        = 1000 // messages per second per sender
	maxSettle      = time.Minute
	maxConnectRate = 10000
)

// Protocol names accepted by -proto.
const (
	protoModified = "modified"
	protoOriginal = "original"
)

// roomPattern is the room-name rule of PROTOCOL.md; checking it here means
// the room can be written into JSON without escaping.
var roomPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// Config is everything one run needs; main fills it from flags and tests
// fill it directly.
type Config struct {
	Target      string
	Proto       string
	Clients     int
	Senders     int
	Rate        float64
	Size        int
	Duration    time.Duration
	Room        string
	Cookie      string
	Pid         int
	SrcAddrs    int // 0: ceil(Clients/16)
	ConnectRate float64
	Idle        bool
	Settle      time.Duration
	Tag         string
	Sign        bool // senders register devices and sign every say (sign.go)
}

// target is the checked form of -target: where to log in, where to dial and
// which Origin to send.
type target struct {
	base   string // scheme://host:port, no path
	wsURL  string
	origin string
	ipv6   bool // the target is [::1]: source spreading over 127.x is impossible
}

// defaultSrcAddrs is ceil(clients/16): at most 16 connections per source
// address keeps a server's per-IP connection and handshake caps at their
// defaults.
func defaultSrcAddrs(clients int) int {
	if clients <= 0 {
		return 1
	}
	return (clients + 15) / 16
}

// validate checks every limit and the loopback rule and returns the parsed
// targets; it runs before anything touches the network.
func (c *Config) validate() ([]*target, error) {
	t, err := parseTargets(c.Target)
	if err != nil {
		return nil, err
	}
	var errs []string
	switch c.Proto {
	case protoModified, protoOriginal:
	default:
		errs = append(errs, fmt.Sprintf("-proto must be %q or %q", protoModified, protoOriginal))
	}
	if c.Clients < 1 || c.Clients > maxClients {
		errs = append(errs, fmt.Sprintf("-clients must be 1..%d", maxClients))
	}
	if !c.Idle {
		if c.Senders < 1 || c.Senders > c.Clients {
			errs = append(errs, "-senders must be 1..clients")
		}
		if c.Rate <= 0 || c.Rate > maxRate {
			errs = append(errs, fmt.Sprintf("-rate must be in (0, %d]", maxRate))
		}
		if c.Duration <= 0 || c.Duration > maxDuration {
			errs = append(errs, fmt.Sprintf("-duration must be in (0, %s]", maxDuration))
		}
	}
	if c.Size < 0 || c.Size > maxSize {
		errs = append(errs, fmt.Sprintf("-size must be 0..%d", maxSize))
	}
	if !roomPattern.MatchString(c.Room) {
		errs = append(errs, "-room must be 1-32 of a-z 0-9 - _ starting with a letter or digit")
	}
	if c.SrcAddrs < 0 || c.SrcAddrs > maxClients {
		errs = append(errs, "-src-addrs out of range")
	}
	if c.ConnectRate <= 0 || c.ConnectRate > maxConnectRate {
		errs = append(errs, fmt.Sprintf("-connect-rate must be in (0, %d]", maxConnectRate))
	}
	if c.Clients > 0 && c.ConnectRate > 0 && float64(c.Clients)/c.ConnectRate > maxDuration.Seconds() {
		errs = append(errs, fmt.Sprintf("-clients / -connect-rate must fit the connect phase within %s", maxDuration))
	}
	if c.Settle < 0 || c.Settle > maxSettle {
		errs = append(errs, fmt.Sprintf("-settle must be 0..%s", maxSettle))
	}
	if c.Pid < 0 {
		errs = append(errs, "-pid must be positive")
	}
	errs = append(errs, c.validateSign()...)
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	return t, nil
}

// parseTarget accepts only http:// URLs whose host is a loopback address or
// "localhost": the tool generates real load and must never point anywhere
// but this machine. Host names other than localhost are refused without a
// DNS lookup, so a name cannot be made to resolve elsewhere.
func parseTarget(raw string) (*target, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("-target: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("-target: scheme must be http (loopback only), got %q", u.Scheme)
	}
	if u.User != nil {
		return nil, errors.New("-target: no user info allowed")
	}
	host := u.Hostname()
	t := &target{}
	if strings.EqualFold(host, "localhost") {
		// Dialing from a 127.x source address makes the dialer pick the
		// IPv4 answer for localhost.
	} else {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("-target: refusing host %q: only 127.0.0.0/8, ::1 or localhost", host)
		}
		t.ipv6 = ip.To4() == nil
	}
	if u.Port() == "" {
		return nil, errors.New("-target: give an explicit port")
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("-target: give only scheme://host:port")
	}
	t.base = "http://" + u.Host
	t.wsURL = "ws://" + u.Host + "/ws"
	t.origin = t.base
	return t, nil
}

// sourceAddrs lists the k local addresses clients dial from: 127.0.0.2,
// 127.0.0.3, ... (skipping .0 and .255 last octets). All of 127.0.0.0/8 is
// local on Linux, so no setup is needed. An IPv6 target gets ::1 alone.
func sourceAddrs(k int, ipv6 bool) []net.IP {
	if ipv6 {
		return []net.IP{net.IPv6loopback}
	}
	if k < 1 {
		k = 1
	}
	out := make([]net.IP, 0, k)
	n := uint32(127<<24 | 2)
	for len(out) < k {
		if b := n & 0xff; b != 0 && b != 255 {
			out = append(out, net.IPv4(byte(n>>24), byte(n>>16), byte(n>>8), byte(n)))
		}
		n++
	}
	return out
}
