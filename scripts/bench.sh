#!/usr/bin/env bash
# Side-by-side benchmark: the original gorilla/websocket chat example against
# modified-chat, both driven by cmd/chatload on loopback, alternating sides
# (A B A B A B) with a fresh server process before every run so that memory
# numbers start clean. Prints medians per workload and the modified/original
# ratio. Run as `make bench` or `bash scripts/bench.sh`.
#
#   BENCH_QUICK=1     short smoke variant: fewer clients, 5 s, one round
#   BENCH_ROUNDS=N    rounds per workload (default 3; quick: 1)
#   BENCH_ONLY="W1 W3" run only these workloads
#   BENCH_OUT=dir     where the JSON reports and logs go (default bin/bench-<time>)
#   BENCH_PORT=N      first of three loopback ports used (default 18080)
#   BENCH_PIN=1       pin each server to CPU 0 and chatload to CPU 1 (taskset), so the
#                     load generator's own work never competes with the server's
#   BENCH_SIGN=1      signed against unsigned instead of modified against original:
#                     each round runs modified-chat twice, unsigned then with every
#                     sender signing (chatload -sign: a registered Ed25519 device per
#                     sender, every say signed and verified by the server); the table's
#                     columns are then modified and signed. Load workloads only, e.g.
#                     BENCH_SIGN=1 BENCH_ONLY="W1 W4" make bench
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN="$ROOT/bin"
OUT=${BENCH_OUT:-"$BIN/bench-$(date +%Y%m%d-%H%M%S)"}
PORT0=${BENCH_PORT:-18080}
ORIG_PORT=$PORT0
MOD_PORT=$((PORT0 + 1))
METRICS_PORT=$((PORT0 + 2))
mkdir -p "$BIN" "$OUT"

log() { printf 'bench: %s\n' "$*" >&2; }

# Every client and every server connection is a file descriptor.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || log "could not raise ulimit -n (now $(ulimit -n))"

# --- pinning -------------------------------------------------------------------
# With BENCH_PIN=1 both servers, alike, run on CPU 0 and chatload on CPU 1.
SERVER_PIN=()
LOAD_PIN=()
if [[ ${BENCH_PIN:-0} == 1 ]]; then
	command -v taskset >/dev/null || { log "BENCH_PIN=1 needs taskset (util-linux)"; exit 1; }
	[[ $(nproc) -ge 2 ]] || { log "BENCH_PIN=1 needs two CPUs"; exit 1; }
	SERVER_PIN=(taskset -c 0)
	LOAD_PIN=(taskset -c 1)
	log "pinned: servers on CPU 0, chatload on CPU 1"
fi

# --- build -----------------------------------------------------------------
# The original comes from the module cache at the version go.mod pins.
build_original() {
	if go build -o "$BIN/original-chat" github.com/gorilla/websocket/examples/chat 2>"$OUT/build-original.log"; then
		return 0
	fi
	local ver moddir
	ver=$(go list -m -f '{{.Version}}' github.com/gorilla/websocket)
	moddir="$(go env GOMODCACHE)/github.com/gorilla/websocket@$ver"
	log "building the original inside $moddir"
	(cd "$moddir" && GOFLAGS=-mod=mod go build -o "$BIN/original-chat" ./examples/chat)
}
log "building into $BIN"
build_original
go build -o "$BIN/modified-chat" .
go build -o "$BIN/chatload" ./cmd/chatload

# --- modified-chat flags -------------------------------------------------------
# The server's -h output tells which limit flags exist and their defaults; a
# workload raises a limit only when it needs more than the default.
MOD_HELP=$("$BIN/modified-chat" -h 2>&1 || true)

# has_flag NAME: the server knows -NAME.
has_flag() { grep -qE -- "^  -$1( |\$)" <<<"$MOD_HELP"; }

# flag_default NAME: the default printed by -h, or empty.
flag_default() {
	awk -v f="  -$1" '
		index($0, f) == 1 && (length($0) == length(f) || substr($0, length(f) + 1, 1) == " ") { grab = 1; next }
		grab { if (match($0, /\(default [^)]*\)/)) { v = substr($0, RSTART + 9, RLENGTH - 10); gsub(/"/, "", v); print v }; exit }
	' <<<"$MOD_HELP"
}

# need NAME VALUE: append -NAME VALUE to MOD_ARGS when the server has the flag
# and its default is below VALUE.
need() {
	local name=$1 want=$2 def
	has_flag "$name" || { log "server has no -$name; leaving it"; return 0; }
	def=$(flag_default "$name")
	if [[ -z $def ]] || awk -v d="$def" -v w="$want" 'BEGIN { exit !(d + 0 < w + 0) }'; then
		MOD_ARGS+=("-$name" "$want")
	fi
}

# --- workloads -----------------------------------------------------------------
# name clients senders rate size duration idle
if [[ ${BENCH_QUICK:-0} == 1 ]]; then
	ROUNDS=${BENCH_ROUNDS:-1}
	WORKLOADS=(
		"W1 100 5 20 64 5s 0"
		"W2 200 10 20 64 5s 0"
		"W3 1000 0 0 64 0s 1"
		"W4 50 50 1 64 5s 0"
	)
else
	ROUNDS=${BENCH_ROUNDS:-3}
	WORKLOADS=(
		"W1 1000 10 20 64 30s 0"
		"W2 2000 20 20 64 30s 0"
		"W3 10000 0 0 64 0s 1"
		"W4 200 200 1 64 30s 0"
	)
fi

# --- server lifecycle ----------------------------------------------------------
SERVER_PID=""

# port_open PORT: something accepts connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# stop_server: end the server this script started, by its pid.
stop_server() {
	if [[ -n $SERVER_PID ]]; then
		kill "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
		SERVER_PID=""
	fi
}
trap stop_server EXIT
trap 'stop_server; exit 130' INT TERM

# wait_port PORT: poll (bounded) until the new server listens.
wait_port() {
	local i
	for ((i = 0; i < 100; i++)); do
		port_open "$1" && return 0
		kill -0 "$SERVER_PID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# start_server SIDE RUNID: a fresh server process for one run.
start_server() {
	local side=$1 id=$2 port
	if [[ $side == original ]]; then
		port=$ORIG_PORT
		port_open "$port" && { log "port $port is already in use"; return 1; }
		# The example serves home.html from its working directory; /ws needs nothing.
		(cd "$OUT" && exec "${SERVER_PIN[@]}" "$BIN/original-chat" -addr "127.0.0.1:$port") >"$OUT/$id.server.log" 2>&1 &
	else
		port=$MOD_PORT
		port_open "$port" && { log "port $port is already in use"; return 1; }
		"${SERVER_PIN[@]}" "$BIN/modified-chat" -addr "127.0.0.1:$port" -data-dir "$OUT/data-$id" "${MOD_ARGS[@]}" \
			>"$OUT/$id.server.log" 2>&1 &
	fi
	SERVER_PID=$!
	if ! wait_port "$port"; then
		log "$side server did not start; see $OUT/$id.server.log"
		stop_server
		return 1
	fi
	PORT=$port
}

# run_one WORKLOAD SIDE ROUND: restart the side's server, run chatload, keep the JSON.
run_one() {
	local name clients senders rate size dur idle side=$2 round=$3
	read -r name clients senders rate size dur idle <<<"$1"
	local id="$name-$side-r$round"
	MOD_ARGS=()
	if has_flag metrics-addr; then MOD_ARGS+=(-metrics-addr "127.0.0.1:$METRICS_PORT"); fi
	need max-conns $((clients + 64))
	need max-members-per-room "$clients"
	need max-conns-per-ip 16 # chatload puts at most 16 clients on each source address
	need ip-handshake-burst 16
	if [[ $idle == 0 ]]; then
		# Twice the send rate so token-bucket jitter never refuses a paced sender.
		local r2
		r2=$(awk -v r="$rate" 'BEGIN { v = 2 * r; if (v < 1) v = 1; print v }')
		need msg-rate "$r2"
		need msg-burst "${r2%.*}"
		need user-msg-rate "$r2"
		need user-msg-burst "${r2%.*}"
	fi
	start_server "$side" "$id" || return 0
	local proto=$side
	[[ $side == signed ]] && proto=modified
	local args=(-target "http://127.0.0.1:$PORT" -proto "$proto" -clients "$clients" -pid "$SERVER_PID"
		-tag "$name" -json -connect-rate 500)
	[[ $side == signed ]] && args+=(-sign)
	if [[ $idle == 1 ]]; then
		args+=(-idle -settle 3s)
	else
		args+=(-senders "$senders" -rate "$rate" -size "$size" -duration "$dur")
	fi
	if [[ $side != original ]]; then
		log "$id: modified-chat ${MOD_ARGS[*]}"
	fi
	log "$id: chatload ${args[*]}"
	if "${LOAD_PIN[@]}" "$BIN/chatload" "${args[@]}" >"$OUT/$id.json" 2>"$OUT/$id.log"; then
		REPORTS+=("$OUT/$id.json")
	else
		log "$id: chatload failed; see $OUT/$id.log"
		rm -f "$OUT/$id.json"
	fi
	stop_server
}

REPORTS=()
MOD_ARGS=()
for w in "${WORKLOADS[@]}"; do
	name=${w%% *}
	if [[ -n ${BENCH_ONLY:-} && " $BENCH_ONLY " != *" $name "* ]]; then
		continue
	fi
	for ((round = 1; round <= ROUNDS; round++)); do
		if [[ ${BENCH_SIGN:-0} == 1 ]]; then
			[[ $w == *" 1" ]] && { log "$name: idle, nothing to sign; skipped"; break; }
			run_one "$w" modified "$round"
			run_one "$w" signed "$round"
		else
			run_one "$w" original "$round"
			run_one "$w" modified "$round"
		fi
	done
done

if [[ ${#REPORTS[@]} -eq 0 ]]; then
	log "no run produced a report"
	exit 1
fi
echo
"$BIN/chatload" -summarize "${REPORTS[@]}"
echo
echo "reports and logs: $OUT"
