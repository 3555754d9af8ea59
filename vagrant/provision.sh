#!/usr/bin/env bash
# Provisions the mcp-guard dev VM (Debian 12): builds and installs mcp-guard, runs the agent
# under systemd, points Prometheus at it and wires one real MCP server through mcp-guard exec.
# Idempotent: `vagrant provision` re-runs it.
set -euo pipefail

SRC=/src/mcp-guard
BUILD=/var/tmp/mcp-guard-build
export DEBIAN_FRONTEND=noninteractive

echo "==> Debian packages"
apt-get update -q
apt-get install -y -q --no-install-recommends \
  build-essential ca-certificates curl git pkg-config python3 python3-venv nodejs \
  prometheus iproute2 procps openssh-client

echo "==> Rust (rustup, stable + the nightly the eBPF build needs)"
if ! command -v cargo >/dev/null && [ ! -x /root/.cargo/bin/cargo ]; then
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
fi
export PATH=/root/.cargo/bin:$PATH

echo "==> build mcp-guard (cargo xtask setup installs the nightly pieces and bpf-linker)"
rm -rf "$BUILD"
cp -a "$SRC" "$BUILD"
cd "$BUILD"
cargo xtask setup
cargo build --release --bin mcp-guard
install -m 0755 target/release/mcp-guard /usr/bin/mcp-guard
# The unprivileged user servers run as when root starts them without sudo.
install -D -m 0644 packaging/sysusers.d/mcp-guard.conf /usr/lib/sysusers.d/mcp-guard.conf
systemd-sysusers /usr/lib/sysusers.d/mcp-guard.conf

echo "==> configuration and policies"
install -d -m 0755 /etc/mcp-guard /etc/mcp-guard/policies
install -m 0644 packaging/mcp-guard.toml /etc/mcp-guard/agent.toml
# Members of group mcp may run MCP servers through the agent (exec then needs no sudo).
groupadd -f mcp
usermod -a -G mcp vagrant
sed -i 's/^# socket_group = "mcp"/socket_group = "mcp"/' /etc/mcp-guard/agent.toml
# /metrics only for requests bearing the token (a root-only file; kept across re-provisioning).
if [ ! -s /etc/mcp-guard/metrics.token ]; then
  install -m 0600 -o root -g root /dev/null /etc/mcp-guard/metrics.token
  python3 -c 'import secrets; print(secrets.token_hex(32))' > /etc/mcp-guard/metrics.token
fi
sed -i 's|^# metrics_token_file = |metrics_token_file = |' /etc/mcp-guard/agent.toml
install -m 0644 policies/*.toml /etc/mcp-guard/policies/
mcp-guard policy check /etc/mcp-guard/policies/*.toml

echo "==> the agent as a systemd service"
install -m 0644 packaging/systemd/mcp-guard.service /etc/systemd/system/mcp-guard.service
systemctl daemon-reload
systemctl enable --now mcp-guard.service
systemctl restart mcp-guard.service

echo "==> Prometheus scraping the agent, with mcp-guard's alert rules"
install -m 0644 packaging/prometheus/prometheus.yml /etc/prometheus/prometheus.yml
install -m 0644 packaging/prometheus/mcp-guard-rules.yml /etc/prometheus/mcp-guard-rules.yml
# Prometheus's own copy of the agent's /metrics token (authorization: credentials_file).
install -o prometheus -g prometheus -m 0400 /etc/mcp-guard/metrics.token \
  /etc/prometheus/mcp-guard-metrics.token
promtool check config /etc/prometheus/prometheus.yml
systemctl enable prometheus
systemctl restart prometheus

echo "==> one real MCP server (mcp-server-time) wired through mcp-guard exec"
python3 -m venv /opt/mcp-servers
/opt/mcp-servers/bin/pip install -q mcp-server-time
CLIENT_DIR=/home/vagrant/.config/Claude
install -d -o vagrant -g vagrant "$CLIENT_DIR"
cat > "$CLIENT_DIR/claude_desktop_config.json" <<'JSON'
{
  "mcpServers": {
    "time": { "command": "/opt/mcp-servers/bin/mcp-server-time", "args": [] }
  }
}
JSON
# Rewrites the config in place (a timestamped backup is kept next to it).
mcp-guard client-config --write "$CLIENT_DIR/claude_desktop_config.json"
chown vagrant:vagrant "$CLIENT_DIR"/*

echo "==> doctor: full enforcement on this kernel (Debian 12's 6.1 keeps every promise of a policy without egress)"
# The kernel matrix runs the same check inside Debian 12's kernel (its "doctor" case).
mcp-guard doctor

echo "==> smoke test: one MCP session as user vagrant through mcp-guard exec and the agent, then the agent's metrics"
# The same script the kernel matrix runs inside Debian 12's kernel (cargo xtask kernels).
sh "$SRC/vagrant/smoke.sh" /home/vagrant/.config/Claude/claude_desktop_config.json \
  vagrant vagrant mcp /opt/mcp-servers/bin/python /etc/mcp-guard/metrics.token
echo "==> done: Prometheus on http://localhost:9090 (host), mcp-guard calls/events/alerts in the VM"
