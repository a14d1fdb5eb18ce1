// Command chatload is the load generator for modified-chat: it opens many
// WebSocket clients against a server on this machine (loopback only), sends
// timestamped messages at a fixed rate, and reports delivery, latency,
// ordering and the server's CPU and memory. It speaks both the modified
// protocol (PROTOCOL.md) and the original gorilla/websocket chat example's
// raw-text protocol, so the two servers can be compared side by side.
//
//	chatload -target http://127.0.0.1:8080 -proto modified -clients 1000 -senders 10 -rate 20 -duration 30s -pid 1234
//	chatload -summarize reports/*.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"
)

// main parses flags and hands over to realMain so deferred work runs before
// the exit code is set.
func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain is the CLI: flags in, report out, exit code back.
func realMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chatload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg Config
	fs.StringVar(&cfg.Target, "target", "http://127.0.0.1:8080", "server base URL, or several comma-separated (the nodes of a cluster: clients spread round-robin); loopback only (127.0.0.0/8, ::1, localhost)")
	fs.StringVar(&cfg.Proto, "proto", protoModified, "protocol: modified (login + JSON) or original (gorilla chat example, raw text)")
	fs.IntVar(&cfg.Clients, "clients", 10, fmt.Sprintf("connections to open (max %d)", maxClients))
	fs.IntVar(&cfg.Senders, "senders", 1, "how many of the clients send")
	fs.Float64Var(&cfg.Rate, "rate", 1, "messages per second per sender")
	fs.IntVar(&cfg.Size, "size", 64, "message text size in bytes (padded)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, fmt.Sprintf("how long senders send (max %s)", maxDuration))
	fs.StringVar(&cfg.Room, "room", "lobby", "room to load (modified protocol)")
	fs.StringVar(&cfg.Cookie, "cookie", "", "session cookie for every client instead of the dev login: name=value, or a bare value named \"chat_session\"")
	fs.IntVar(&cfg.Pid, "pid", 0, "server process id, to report its CPU and RSS from /proc")
	fs.IntVar(&cfg.SrcAddrs, "src-addrs", 0, "spread clients over this many source addresses 127.0.0.2, 127.0.0.3, ... (0: ceil(clients/16))")
	fs.Float64Var(&cfg.ConnectRate, "connect-rate", 500, "new connections per second, overall")
	fs.BoolVar(&cfg.Idle, "idle", false, "open connections, send nothing, report server RSS per connection")
	fs.DurationVar(&cfg.Settle, "settle", 2*time.Second, "wait for in-flight deliveries after sending stops (idle: before measuring)")
	fs.StringVar(&cfg.Tag, "tag", "", "label stored in the report (the workload name, for -summarize)")
	fs.BoolVar(&cfg.Sign, "sign", false, "each sender registers an Ed25519 device (dev login users) and signs every say, as the page does")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	summarize := fs.Bool("summarize", false, "summarize JSON report files given as arguments into a comparison table")
	cpuProfile := fs.String("cpuprofile", "", "write chatload's own CPU profile to this file (it shares the machine with the server, so its cost is in every latency)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *summarize {
		if err := summarizeFiles(fs.Args(), stdout); err != nil {
			fmt.Fprintln(stderr, "chatload:", err)
			return 1
		}
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "chatload: unexpected arguments %q\n", fs.Args())
		return 2
	}
	raiseFileLimit(stderr)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "chatload:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(stderr, "chatload:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, cfg, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "chatload:", err)
		return 2
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "chatload:", err)
			return 1
		}
	} else {
		rep.WriteText(stdout)
	}
	return 0
}

// raiseFileLimit lifts the soft open-file limit to the hard one: every
// client is a socket, and the usual soft limit (1024) is far below the
// client cap.
func raiseFileLimit(stderr io.Writer) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fmt.Fprintln(stderr, "chatload: getrlimit:", err)
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			fmt.Fprintln(stderr, "chatload: setrlimit:", err)
		}
	}
}
