#!/bin/sh
# The dev VM's smoke test: one MCP session, as an unprivileged user, through the client config
# that `mcp-guard client-config --write` wrapped (so through mcp-guard exec and the agent), then
# the agent's metrics: 401 without the token, the tool call counted with it.
#
# Run by provision.sh at the end of `vagrant up`, and by `cargo xtask kernels` inside Debian
# 12's own kernel (the case "vagrant: provisioning smoke test" of xtask/src/kernels/matrix.rs),
# which is the proof that the box works on its kernel, since vagrant cannot run there.
#
# Usage: smoke.sh CLIENT_CONFIG USER GROUP SUPPLEMENTARY_GROUP PYTHON TOKEN_FILE [METRICS_ADDR]
# (SUPPLEMENTARY_GROUP may be empty; PYTHON has the MCP SDK.)
set -eu
config=$1 user=$2 group=$3 extra=$4 python=$5 token=$6 addr=${7:-127.0.0.1:9464}
runuser -u "$user" -g "$group" ${extra:+-G "$extra"} -- "$python" - "$config" <<'PY'
import asyncio, json, sys
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

async def main():
    config = json.load(open(sys.argv[1]))
    server = config["mcpServers"]["time"]
    params = StdioServerParameters(command=server["command"], args=server["args"])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as client:
            await client.initialize()
            answer = await client.call_tool("get_current_time", {"timezone": "UTC"})
            print("time server through mcp-guard:", answer.content[0].text)

asyncio.run(main())
PY
sleep 2
test "$(curl -s -o /dev/null -w '%{http_code}' "$addr/metrics")" = 401
curl -sf -H "Authorization: Bearer $(cat "$token")" "$addr/metrics" \
  | grep '^mcp_guard_tool_calls_total'
