#!/usr/bin/env bash
# The whole loop on one machine, with embedded defaults: the collector on SQLite (data in ./var), this
# machine's agent enrolled with it, one report delivered, then the agent service in the foreground.
# Ctrl-C stops the agent and the collector cleanly. Re-runs reuse ./var (same admin credentials, same device).
#
# Environment (all optional):
#   TELEPOSTURE_UP_DIR      data directory (default ./var; the agent's state goes to <dir>/agent)
#   TELEPOSTURE_UP_PORT     collector port on 127.0.0.1 (default 8080; a free port is taken if it is busy)
#   TELEPOSTURE_UP_ONESHOT  1: stop after the first report instead of running the service (tests, CI)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
if [ ! -x "$BIN/teleposture-server" ] || [ ! -x "$BIN/teleposture-agent" ]; then
    echo "up: the Python environment is missing: run 'bash scripts/setup-dev.sh' first" >&2
    exit 2
fi
PY="$BIN/python"
VAR="${TELEPOSTURE_UP_DIR:-var}"
mkdir -p "$VAR"
VAR="$(cd "$VAR" && pwd)"
AGENT_STATE="$VAR/agent"
CREDENTIALS="$VAR/admin-credentials.txt"
LOG="$VAR/collector.log"
HOST=127.0.0.1
PORT="${TELEPOSTURE_UP_PORT:-8080}"

port_is_free() {
    "$PY" -c 'import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()' "$1"
}
if [ "$PORT" = 0 ] || ! port_is_free "$PORT"; then
    [ "$PORT" = 0 ] || echo "up: port $PORT is busy, taking a free one"
    PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
fi
URL="http://$HOST:$PORT"
SERVER=("$BIN/teleposture-server" --data-dir "$VAR")
# plain http is allowed for this loopback collector only
AGENT_FLAGS=(--state-dir "$AGENT_STATE" --server "$URL" --allow-http)

server_pid=""
agent_pid=""
# shellcheck disable=SC2317  # invoked through the traps below
cleanup() {
    trap - EXIT INT TERM
    # Ctrl-C reaches the whole foreground group, so a child may have stopped (and been reaped) already:
    # signal it if it is still there, and wait for it either way
    if [ -n "$agent_pid" ]; then
        kill -TERM "$agent_pid" 2>/dev/null || true
        wait "$agent_pid" 2>/dev/null || true
    fi
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        echo "up: collector stopped"
    fi
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

# 1. database, server key, baseline policy and first admin (idempotent: a re-run only checks)
init_out="$("${SERVER[@]}" init)"
if grep -q '^admin password:' <<<"$init_out"; then
    (umask 077 && printf '%s\n' "$init_out" >"$CREDENTIALS")
fi
grep -v -e '^admin password:' -e '^tpa_' <<<"$init_out" | sed 's/^/up: collector: /'

# 2. the collector in the background
"${SERVER[@]}" serve --host "$HOST" --port "$PORT" >>"$LOG" 2>&1 &
server_pid=$!
for _ in $(seq 1 150); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "up: the collector did not start; the end of $LOG says:" >&2
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    if "$PY" -c 'import sys, requests
try:
    sys.exit(0 if requests.get(sys.argv[1], timeout=1).ok else 1)
except requests.RequestException:
    sys.exit(1)' "$URL/api/v1/health" 2>/dev/null; then
        break
    fi
    sleep 0.2
done
echo "up: collector listening on $URL (log: $LOG)"

# 3. enrol this machine once (again if the collector no longer knows it)
enrol() {
    local token
    token="$("${SERVER[@]}" token create --org-unit default --uses 1 --expires 1h | tail -n 1)"
    "$BIN/teleposture-agent" enroll "${AGENT_FLAGS[@]}" --token "$token" "$@"
}
if [ ! -f "$AGENT_STATE/identity.json" ]; then
    enrol
fi

# 4. one cycle, signed, queued and delivered
set +e
report_out="$("$BIN/teleposture-agent" report --now "${AGENT_FLAGS[@]}")"
report_rc=$?
set -e
if [ "$report_rc" -ne 0 ] && grep -q -e "unknown device" -e "replaced by a newer enrolment" -e "enrol it again" <<<"$report_out"; then
    echo "up: the collector does not know this agent's identity (new database?): enrolling again"
    enrol --force
    set +e
    report_out="$("$BIN/teleposture-agent" report --now "${AGENT_FLAGS[@]}")"
    report_rc=$?
    set -e
fi
# shellcheck disable=SC2001  # prefix every line, not one substitution
sed 's/^/up: agent: /' <<<"$report_out"

# 5. where to look, and with what
echo
echo "up: dashboard      $URL/"
echo "up: API (OpenAPI)  $URL/docs"
if [ -f "$CREDENTIALS" ]; then
    echo "up: admin user     $(sed -n 's/^admin user: //p' "$CREDENTIALS")"
    echo "up: password       $(sed -n 's/^admin password: //p' "$CREDENTIALS")"
    echo "up: API token      $(tail -n 1 "$CREDENTIALS")   (Authorization: Bearer ...)"
    echo "up: (kept in $CREDENTIALS)"
fi
"$BIN/teleposture-agent" status --state-dir "$AGENT_STATE" --server "$URL" | sed 's/^/up: /'
echo

if [ "${TELEPOSTURE_UP_ONESHOT:-0}" = 1 ]; then
    exit "$report_rc"
fi

# 6. the agent service in the foreground until Ctrl-C
echo "up: running the agent service; Ctrl-C stops the agent and the collector"
"$BIN/teleposture-agent" run "${AGENT_FLAGS[@]}" &
agent_pid=$!
set +e
wait "$agent_pid"
rc=$?
set -e
agent_pid=""
exit "$rc"
