"""mcp-guard's main job, end to end: real MCP servers under `mcp-guard exec`, driven by the real
MCP Python SDK client, doing ordinary work and attempting what mcp-guard exists to stop.

usage: demo.py MCP_GUARD REPO_ROOT [--json]    (scratch dir: $MCP_GUARD_DEMO_DIR, default
                                              /var/tmp/mcp-guard-demo, wiped at the start)

Nothing is staged: the servers are the real npm/PyPI packages, the denials come from the kernel
(landlock, eBPF) and from mcp-guard's MCP proxy, and what is shown afterwards is read back from
mcp-guard's own store with its own commands. With --json the last line is a JSON summary of every
step's observable result (the integration test asserts on it).
"""

import asyncio
import http.server
import json
import re
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

MCP_GUARD, ROOT = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
JSON = "--json" in sys.argv[3:]
# Outside /tmp: every jailed server gets a private /tmp of its own.
DEMO = Path(os.environ.get("MCP_GUARD_DEMO_DIR", "/var/tmp/mcp-guard-demo"))
# The demo's own agent: its socket and bpffs pin directory (removed at the end).
SOCKET = DEMO / "agent.sock"
PINS = Path("/sys/fs/bpf/mcp-guard-demo")
HOME, STATE = DEMO / "home", DEMO / "state"
PROJECT = HOME / "project"
summary = {}


def say(text=""):
    print(text, flush=True)


def step(title):
    say(f"\n\033[1m== {title}\033[0m" if sys.stdout.isatty() else f"\n== {title}")


def derived_policy(name, extra_read=(), extra_write=(), extra_exec=(), deny_tools=()):
    """The shipped policy `name`, plus this machine's install dirs and the demo's project."""
    text = (ROOT / "policies" / f"{name}.toml").read_text()

    def add(key, entries):
        nonlocal text
        if entries:
            listed = "".join(f'  "{e}",\n' for e in entries)
            text = text.replace(f"\n{key} = [\n", f"\n{key} = [\n{listed}", 1)

    add("read", [str(p) for p in extra_read])
    add("write", [str(p) for p in extra_write])
    add("exec", [str(p) for p in extra_exec])
    if deny_tools:
        denied = "deny = [" + ", ".join(f'"{t}"' for t in deny_tools) + "]"
        head, tools = text.split("\n[tools]\n", 1)
        text = head + "\n[tools]\n" + re.sub(r"^deny = \[\]", denied, tools, count=1, flags=re.M)
    path = DEMO / f"{name}.toml"
    path.write_text(text)
    return path


def guarded(policy, name, *command):
    """The server command as an MCP client config would run it: behind `mcp-guard exec`."""
    # exec hands the session to the demo's agent (its socket), which runs it with the eBPF
    # programs it pinned once.
    args = ["--state-dir", str(STATE), "exec", "--agent-socket", str(SOCKET), "--policy", str(policy), "--name", name, "--", *map(str, command)]
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TERM")}
    env["HOME"] = str(HOME)
    return StdioServerParameters(command=str(MCP_GUARD), args=args, env=env)


def text_of(answer):
    return "\n".join(c.text for c in answer.content if getattr(c, "type", None) == "text")


async def call(client, tool, arguments):
    try:
        answer = await client.call_tool(tool, arguments)
        return {"is_error": bool(answer.is_error), "text": text_of(answer)}
    except Exception as e:  # a JSON-RPC error from mcp-guard's proxy
        return {"is_error": True, "text": f"JSON-RPC error: {e}"}


def show(label, result):
    mark = "refused" if result["is_error"] else "ok"
    first = (result["text"].strip().splitlines() or [""])[0][:110]
    say(f"  {label:<44} {mark:<8} {first}")


async def filesystem():
    step("filesystem server (npm @modelcontextprotocol/server-filesystem)")
    say("  The server is given the whole home directory; its policy grants only ~/project.")
    entry = ROOT / "tests/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js"
    modules = ROOT / "tests/node_modules"
    policy = derived_policy("filesystem", extra_read=[modules, PROJECT], extra_exec=[modules], deny_tools=["write_file"])
    out = {}
    async with stdio_client(guarded(policy, "filesystem", "node", entry, HOME)) as (r, w):
        async with ClientSession(r, w) as client:
            await client.initialize()
            tools = [t.name for t in (await client.list_tools()).tools]
            say(f"  tools/list: {len(tools)} tools; write_file hidden by policy: {'write_file' not in tools}")
            out["tools"] = tools
            out["list"] = await call(client, "list_directory", {"path": str(PROJECT)})
            show("list_directory ~/project", out["list"])
            out["read"] = await call(client, "read_text_file", {"path": str(PROJECT / "notes.md")})
            show("read_text_file ~/project/notes.md", out["read"])
            out["credentials"] = await call(client, "read_text_file", {"path": str(HOME / ".aws/credentials")})
            show("read_text_file ~/.aws/credentials", out["credentials"])
            out["write"] = await call(client, "write_file", {"path": str(PROJECT / "x"), "content": "x"})
            show("write_file (denied tool)", out["write"])
    summary["filesystem"] = out


class Listener(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self):  # noqa: N802 - http.server's naming
        Listener.hits += 1
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"internal admin page\n")

    def log_message(self, *args):
        pass


async def fetch():
    step("fetch server (PyPI mcp-server-fetch)")
    # Port 80, which the policy allows: only the address (loopback, not public) is refused, so
    # the refusal is the eBPF egress filter's, not landlock's port rule.
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 80), Listener)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Listener)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    say(f"  A local HTTP service listens on 127.0.0.1:{port}; the fetch policy allows public addresses only.")
    say("  The server's own private-address check is switched off (--allow-private-ips): the kernel decides.")
    venv = ROOT / ".venv"
    python_home = Path(os.path.realpath(venv / "bin/python")).parent.parent
    policy = derived_policy("fetch", extra_read=[venv, python_home], extra_exec=[venv, python_home])
    out = {"port": port}
    async with stdio_client(guarded(policy, "fetch", venv / "bin/python", "-P", "-m", "mcp_server_fetch", "--ignore-robots-txt", "--allow-private-ips")) as (r, w):
        async with ClientSession(r, w) as client:
            await client.initialize()
            out["fetch"] = await call(client, "fetch", {"url": f"http://127.0.0.1:{port}/admin"})
            show(f"fetch http://127.0.0.1:{port}/admin", out["fetch"])
    server.shutdown()
    out["listener_hits"] = Listener.hits
    say(f"  requests that reached the local service: {Listener.hits}")
    summary["fetch"] = out


async def rug_pull():
    step("rug pull (a fixture server that rewrites a tool's description after it was approved)")
    venv = ROOT / ".venv"
    python_home = Path(os.path.realpath(venv / "bin/python")).parent.parent
    fixtures = ROOT / "tests/fixtures"
    policy = derived_policy("default", extra_read=[venv, python_home, fixtures], extra_exec=[venv, python_home])
    out = {}
    server = guarded(policy, "tricky", venv / "bin/python", fixtures / "tricky_server.py", "rugpull")
    async with stdio_client(server) as (r, w):
        async with ClientSession(r, w) as client:
            await client.initialize()
            first = [t.name for t in (await client.list_tools()).tools]
            out["first_call"] = await call(client, "echo", {"message": "hello"})
            show("echo (as first listed)", out["first_call"])
            second = [t.name for t in (await client.list_tools()).tools]
            say(f"  tools/list after the change: {second} (echo {'hidden' if 'echo' not in second else 'still listed'})")
            out["after_change"] = await call(client, "echo", {"message": "hello"})
            show("echo (after its description changed)", out["after_change"])
            out["first_tools"], out["second_tools"] = first, second
    summary["rug_pull"] = out


def guard_cmd(*args, capture=False):
    cmd = [str(MCP_GUARD), "--state-dir", str(STATE), *args]
    if capture:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    subprocess.run(cmd, check=False)


def records(*args):
    return [json.loads(line) for line in guard_cmd(*args, "--json", capture=True).splitlines() if line.strip()]


def start_agent():
    """`mcp-guard agent`: loads and pins the eBPF programs, runs the demo's sessions for exec
    (its socket), follows their history and serves /metrics on a free port."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{probe.getsockname()[1]}"
    log = open(DEMO / "agent.log", "w")
    agent = subprocess.Popen(
        [str(MCP_GUARD), "--state-dir", str(STATE), "agent", "--config", "/dev/null", "--metrics", addr,
         "--socket", str(SOCKET), "--bpf-dir", str(PINS)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )
    for _ in range(100):
        try:
            scrape(addr)
            if SOCKET.exists():
                return agent, addr
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"mcp-guard agent did not start: {(DEMO / 'agent.log').read_text()}")


def scrape(addr):
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as answer:
        return answer.read().decode()


def main():
    shutil.rmtree(DEMO, ignore_errors=True)
    (HOME / ".aws").mkdir(parents=True)
    (HOME / ".ssh").mkdir()
    PROJECT.mkdir()
    (HOME / ".aws/credentials").write_text("[default]\naws_access_key_id = AKIADEMODEMODEMODEMO\naws_secret_access_key = demo/secret\n")
    (HOME / ".ssh/id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\ndemo\n-----END OPENSSH PRIVATE KEY-----\n")
    (PROJECT / "notes.md").write_text("# Project notes\nShip the release on Friday.\n")
    STATE.mkdir()
    agent, addr = start_agent()
    step("mcp-guard agent")
    say(f"  Pinned the eBPF programs in {PINS}; listening on {SOCKET}.")
    say("  Each `mcp-guard exec` below hands its stdio to the agent, which runs the session (jail,")
    say("  proxy, eBPF guard) as the calling user; exec itself needs no privilege then.")
    asyncio.run(filesystem())
    asyncio.run(fetch())
    asyncio.run(rug_pull())

    step("what mcp-guard recorded: mcp-guard alerts")
    guard_cmd("alerts")
    step("denied kernel events: mcp-guard events (filtered to denials)")
    events = records("events")
    denied = [e for e in events if e.get("verdict") in ("denied", "killed")]
    for e in denied:
        where = e.get("path") or f"{e.get('addr')}:{e.get('port')}"
        say(f"  {e['server']:<11} {e['kind']:<8} {e['verdict']:<7} {where}  (call {e.get('call_id') or '-'})")
    calls = records("calls")
    reads = [c for c in calls if c.get("tool") == "read_text_file"]
    if reads:
        last = reads[-1]["call_id"]
        step(f"one call as a timeline: mcp-guard trace {last}")
        guard_cmd("trace", last)
    step(f"metrics: what Prometheus scrapes from mcp-guard agent (http://{addr}/metrics)")
    time.sleep(1.5)  # the agent follows the store once a second
    wanted = ("mcp_guard_tool_calls_total", "mcp_guard_alerts_total", "mcp_guard_servers_running")
    metrics = [
        line for line in scrape(addr).splitlines()
        if line.startswith(wanted) or (line.startswith("mcp_guard_kernel_events_total") and "denied" in line)
    ]
    for line in metrics:
        say(f"  {line}")
    say(f"  (everything is also in the store: sqlite3 {STATE}/mcp-guard.db)")
    agent.terminate()
    agent.wait(timeout=10)
    shutil.rmtree(PINS, ignore_errors=True)
    summary["metrics"] = metrics
    summary["events"] = denied
    summary["alerts"] = records("alerts")
    summary["calls"] = calls
    if JSON:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
