#!/bin/sh
# The dev VM's smoke test: one MCP session, as an unprivileged user, through the client config
# that `mcp-guard client-config --write` wrapped (so through mcp-guard exec and the agent), then
# the agent's metrics: 401 without the token, the tool call counted with it.
#
# Run by provision.sh at the end of `vagrant up`, and by `cargo xtask kernels` inside Debian
# 12's own kernel (the case "vagrant: provisioning smoke test" of xtask/src/kernels/matrix.rs),
# which is the proof that the box works on its kernel, since vagrant cannot run there.
#
# The client speaks MCP's stdio transport itself (newline-delimited JSON-RPC: initialize, the
# initialized notification, tools/list, tools/call) with Python's standard library only: the
# SDK's import alone costs more than the whole session under the matrix's emulated CPU, and the
# SDK client is exercised by the matrix's own MCP case. The server is the box's real one.
#
# Usage: smoke.sh CLIENT_CONFIG USER GROUP SUPPLEMENTARY_GROUP PYTHON TOKEN_FILE [METRICS_ADDR]
# (SUPPLEMENTARY_GROUP may be empty; PYTHON is any Python 3.)
set -eu
config=$1 user=$2 group=$3 extra=$4 python=$5 token=$6 addr=${7:-127.0.0.1:9464}
runuser -u "$user" -g "$group" ${extra:+-G "$extra"} -- "$python" - "$config" <<'PY'
import json, os, select, subprocess, sys, time

# Generous: under the matrix's software emulation the server's imports take minutes.
BUDGET_S = 600
start = time.monotonic()
config = json.load(open(sys.argv[1]))
server = config["mcpServers"]["time"]
env = dict(os.environ, **server.get("env", {}))
proc = subprocess.Popen([server["command"], *server.get("args", [])], env=env,
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
out = proc.stdout.fileno()
pending = b""

def fail(why):
    proc.kill()
    sys.exit(f"smoke: {why} (server exit status {proc.wait()})")

def send(msg):
    proc.stdin.write(json.dumps(msg).encode() + b"\n")
    proc.stdin.flush()

def answer(request_id, method):
    """The result of request `request_id`; answers the server's pings on the way."""
    global pending
    while True:
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if not line.strip():
                continue
            msg = json.loads(line)
            if msg.get("id") == request_id and ("result" in msg or "error" in msg):
                if "error" in msg:
                    fail(f"{method} answered with an error: {msg['error']}")
                print(f"smoke: {method} answered after {time.monotonic() - start:.1f} s", flush=True)
                return msg["result"]
            if msg.get("method") == "ping" and "id" in msg:
                send({"jsonrpc": "2.0", "id": msg["id"], "result": {}})
        left = start + BUDGET_S - time.monotonic()
        if left <= 0:
            fail(f"no answer to {method} within {BUDGET_S} s")
        if select.select([out], [], [], left)[0]:
            chunk = os.read(out, 65536)
            if not chunk:
                fail(f"the server closed its stdout before answering {method}")
            pending += chunk

send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "mcp-guard-vagrant-smoke", "version": "1"}}})
info = answer(1, "initialize")
print("smoke: server", info.get("serverInfo"), "protocol", info.get("protocolVersion"))
send({"jsonrpc": "2.0", "method": "notifications/initialized"})
send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
tools = [t["name"] for t in answer(2, "tools/list")["tools"]]
if "get_current_time" not in tools:
    fail(f"no get_current_time among the tools {tools}")
send({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
      "params": {"name": "get_current_time", "arguments": {"timezone": "UTC"}}})
result = answer(3, "tools/call")
text = "".join(c.get("text", "") for c in result.get("content", []))
if result.get("isError") or '"timezone": "UTC"' not in text:
    fail(f"get_current_time did not answer with UTC's time: {result}")
print("time server through mcp-guard:", text)
# Closing stdin ends the session: the server exits, and exec with it.
proc.stdin.close()
try:
    status = proc.wait(timeout=max(1, start + BUDGET_S - time.monotonic()))
except subprocess.TimeoutExpired:
    fail("the server did not exit after its stdin closed")
print(f"smoke: session over after {time.monotonic() - start:.1f} s (exit status {status})")
PY
test "$(curl -s -o /dev/null -w '%{http_code}' "$addr/metrics")" = 401
# The agent counts the call when the proxy reports it, which may trail the session's end.
i=0
until curl -sf -H "Authorization: Bearer $(cat "$token")" "$addr/metrics" \
    | grep '^mcp_guard_tool_calls_total{' | grep 'server="time"' \
    | grep 'tool="get_current_time"'; do
  i=$((i + 1))
  if [ "$i" -ge 30 ]; then
    echo "smoke: the agent's metrics count no get_current_time call after 30 s" >&2
    exit 1
  fi
  sleep 1
done
