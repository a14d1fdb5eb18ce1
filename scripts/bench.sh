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
#   BENCH_WORKLOADS="C30 2000 30 20 64 20s 0;C40 2000 40 20 64 20s 0"
#                     run these workloads instead (name clients senders rate size
#                     duration idle, separated by ';'), e.g. for the ceiling sweep
#   BENCH_OUT=dir     where the JSON reports and logs go (default bin/bench-<time>)
#   BENCH_PORT=N      first of six loopback ports used (default 18080)
#   BENCH_SETTLE=10s  how long chatload waits for in-flight deliveries after the senders
#                     stop (default chatload's 2s); a message still in flight then is
#                     counted as not delivered, so an overload whose tail is longer than
#                     the settle shows as loss. Both sides get the same settle
#   BENCH_NODES=2     compare one node with two nodes on Redis instead of the original
#                     with one node: each cluster run starts a fresh redis-server
#                     (AOF, appendfsync always) and two nodes on loopback, chatload
#                     spreads the clients over both; its workloads are tagged <W>/2n.
#                     CPU per process (each node, Redis, chatload) and per million
#                     deliveries is printed for every run of either side.
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
REDIS_PORT=$((PORT0 + 3))
NODE2_PORT=$((PORT0 + 4))
METRICS2_PORT=$((PORT0 + 5))
NODES=${BENCH_NODES:-1}
case $NODES in
1) SIDES=(original modified) ;;
2) SIDES=(modified cluster) ;;
*) printf 'bench: BENCH_NODES must be 1 or 2\n' >&2; exit 2 ;;
esac
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
if [[ -n ${BENCH_WORKLOADS:-} ]]; then
	IFS=';' read -r -a WORKLOADS <<<"$BENCH_WORKLOADS"
fi

# --- server lifecycle ----------------------------------------------------------
SERVER_PID=""
# EXTRA_PIDS are the cluster side's second node and its redis-server.
EXTRA_PIDS=()

# port_open PORT: something accepts connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# stop_server: end the servers this script started, by their pids (Redis last).
stop_server() {
	local p
	for p in $SERVER_PID "${EXTRA_PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	SERVER_PID=""
	EXTRA_PIDS=()
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

# wait_pid_port PID PORT: poll (bounded) until process PID listens on PORT.
wait_pid_port() {
	local i
	for ((i = 0; i < 100; i++)); do
		port_open "$2" && return 0
		kill -0 "$1" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# start_cluster RUNID: a fresh redis-server and two nodes sharing it, the keys made for
# this run; SERVER_PID is node 1, EXTRA_PIDS node 2 and Redis.
start_cluster() {
	local id=$1 dir="$OUT/cluster-$id" p
	command -v redis-server >/dev/null || { log "BENCH_NODES=2 needs redis-server (make deps)"; return 1; }
	for p in "$MOD_PORT" "$NODE2_PORT" "$REDIS_PORT"; do
		port_open "$p" && { log "port $p is already in use"; return 1; }
	done
	mkdir -p "$dir/redis"
	(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/cluster.key" && echo >>"$dir/cluster.key")
	(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/session.key" && echo >>"$dir/session.key")
	"${SERVER_PIN[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$dir/redis" --save '' \
		--appendonly yes --appendfsync always --maxmemory-policy noeviction >"$OUT/$id.redis.log" 2>&1 &
	EXTRA_PIDS+=($!)
	wait_pid_port "$!" "$REDIS_PORT" || { log "redis-server did not start; see $OUT/$id.redis.log"; stop_server; return 1; }
	local common=(-redis-url "redis://127.0.0.1:$REDIS_PORT" -cluster-key-file "$dir/cluster.key"
		-session-key-file "$dir/session.key")
	"${SERVER_PIN[@]}" "$BIN/modified-chat" -addr "127.0.0.1:$MOD_PORT" -data-dir "$dir/n1" "${common[@]}" "${MOD_ARGS[@]}" \
		>"$OUT/$id.server.log" 2>&1 &
	SERVER_PID=$!
	local args2=("${MOD_ARGS[@]/#127.0.0.1:$METRICS_PORT/127.0.0.1:$METRICS2_PORT}")
	"${SERVER_PIN[@]}" "$BIN/modified-chat" -addr "127.0.0.1:$NODE2_PORT" -data-dir "$dir/n2" "${common[@]}" "${args2[@]}" \
		>"$OUT/$id.server2.log" 2>&1 &
	EXTRA_PIDS=($! "${EXTRA_PIDS[@]}")
	if ! wait_pid_port "$SERVER_PID" "$MOD_PORT" || ! wait_pid_port "${EXTRA_PIDS[0]}" "$NODE2_PORT"; then
		log "a cluster node did not start; see $OUT/$id.server*.log"
		stop_server
		return 1
	fi
	TARGET="http://127.0.0.1:$MOD_PORT,http://127.0.0.1:$NODE2_PORT"
}

# cpu_ticks PID: user+system clock ticks the process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# start_server SIDE RUNID: a fresh server process (or cluster) for one run.
start_server() {
	local side=$1 id=$2 port
	if [[ $side == cluster ]]; then
		start_cluster "$id"
		return
	fi
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
	TARGET="http://127.0.0.1:$port"
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
	local proto=$side tag=$name
	[[ $side == signed ]] && proto=modified
	if [[ $side == cluster ]]; then proto=modified tag="$name/2n"; fi
	local args=(-target "$TARGET" -proto "$proto" -clients "$clients" -pid "$SERVER_PID"
		-tag "$tag" -json -connect-rate 500)
	[[ $side == signed ]] && args+=(-sign)
	if [[ $idle == 1 ]]; then
		args+=(-idle -settle 3s)
	else
		args+=(-senders "$senders" -rate "$rate" -size "$size" -duration "$dur")
		[[ -n ${BENCH_SETTLE:-} ]] && args+=(-settle "$BENCH_SETTLE")
	fi
	if [[ $side != original ]]; then
		log "$id: modified-chat ${MOD_ARGS[*]}"
	fi
	log "$id: chatload ${args[*]}"
	local pids=($SERVER_PID "${EXTRA_PIDS[@]}") before=() p i ok=0
	for p in "${pids[@]}"; do before+=("$(cpu_ticks "$p")"); done
	"${LOAD_PIN[@]}" "$BIN/chatload" "${args[@]}" >"$OUT/$id.json" 2>"$OUT/$id.log" &
	local lp=$!
	local lt=0
	while kill -0 "$lp" 2>/dev/null; do lt=$(cpu_ticks "$lp"); sleep 0.2; done
	wait "$lp" && ok=1
	if ((ok)); then
		REPORTS+=("$OUT/$id.json")
		# CPU seconds per process during the run; chatload's as last read before it exited.
		local names=(node1 node2 redis) line="$id $tag"
		[[ $side == cluster ]] || names=(server)
		for i in "${!pids[@]}"; do
			line+=" ${names[$i]}=$(awk -v a="${before[$i]}" -v b="$(cpu_ticks "${pids[$i]}")" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }')"
		done
		line+=" chatload=$(awk -v b="$lt" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", b / hz }')"
		line+=" delivered=$(grep -o '"delivered": *[0-9]*' "$OUT/$id.json" | grep -o '[0-9]*$' || echo 0)"
		CPU_LINES+=("$line")
	else
		log "$id: chatload failed; see $OUT/$id.log"
		rm -f "$OUT/$id.json"
	fi
	stop_server
}

REPORTS=()
CPU_LINES=()
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
			for side in "${SIDES[@]}"; do
				run_one "$w" "$side" "$round"
			done
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
# CPU per process, and per million deliveries (the whole run, connect phase included;
# on 2 cores every process shares the same two, so the sum is what the machine did).
echo "cpu seconds per process, and per million deliveries:"
for line in "${CPU_LINES[@]}"; do
	awk '{
		d = 0; for (i = 3; i <= NF; i++) if ($i ~ /^delivered=/) { split($i, kv, "="); d = kv[2] }
		printf "%-22s %-8s", $1, $2
		for (i = 3; i <= NF; i++) {
			split($i, kv, "="); if (kv[1] == "delivered") continue
			printf " %s %6.2f s", kv[1], kv[2]
			if (d > 0) printf " (%.2f s/M)", kv[2] / (d / 1e6)
		}
		printf "  deliveries %d\n", d
	}' <<<"$line"
done
echo
echo "reports and logs: $OUT"
